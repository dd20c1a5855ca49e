-- Demo fee schedule (idempotent). Amounts are integer minor units of their currency.

INSERT INTO nationality_groups (code, name) VALUES
    ('eu', 'European Union'),
    ('asean', 'Association of Southeast Asian Nations'),
    ('gcc', 'Gulf Cooperation Council')
ON CONFLICT (code) DO NOTHING;

INSERT INTO nationality_group_members (group_code, country)
SELECT 'eu', c FROM unnest(ARRAY['AT','BE','BG','HR','CY','CZ','DK','EE','FI','FR','DE','GR','HU',
    'IE','IT','LV','LT','LU','MT','NL','PL','PT','RO','SK','SI','ES','SE']) AS c
UNION ALL
SELECT 'asean', c FROM unnest(ARRAY['BN','KH','ID','LA','MY','MM','PH','SG','TH','VN']) AS c
UNION ALL
SELECT 'gcc', c FROM unnest(ARRAY['BH','KW','OM','QA','SA','AE']) AS c
ON CONFLICT DO NOTHING;

INSERT INTO fee_rules (id, visa_type, processing_speed, nationality_country, nationality_group,
                       effective_from, effective_until, exempt, base_currency, description)
VALUES
    -- Everyone else, in US dollars.
    ('0190a000-0000-7000-8000-000000000001', 'tourist',  'standard', NULL, NULL, '2026-01-01', NULL, false, 'USD', 'Tourist, standard'),
    ('0190a000-0000-7000-8000-000000000002', 'tourist',  'express',  NULL, NULL, '2026-01-01', NULL, false, 'USD', 'Tourist, express'),
    ('0190a000-0000-7000-8000-000000000003', 'business', 'standard', NULL, NULL, '2026-01-01', NULL, false, 'USD', 'Business, standard'),
    ('0190a000-0000-7000-8000-000000000004', 'business', 'express',  NULL, NULL, '2026-01-01', NULL, false, 'USD', 'Business, express'),
    ('0190a000-0000-7000-8000-000000000005', 'transit',  'standard', NULL, NULL, '2026-01-01', NULL, false, 'USD', 'Transit, standard'),
    ('0190a000-0000-7000-8000-000000000006', 'transit',  'express',  NULL, NULL, '2026-01-01', NULL, false, 'USD', 'Transit, express'),
    -- The 2025 tourist price, no longer in force.
    ('0190a000-0000-7000-8000-000000000007', 'tourist',  'standard', NULL, NULL, '2025-01-01', '2026-01-01', false, 'USD', 'Tourist, standard (2025)'),
    -- EU nationals: tourist visas cheaper, payable in USD or EUR.
    ('0190a000-0000-7000-8000-000000000011', 'tourist',  'standard', NULL, 'eu', '2026-01-01', NULL, false, 'USD', 'Tourist, standard, EU'),
    ('0190a000-0000-7000-8000-000000000012', 'tourist',  'express',  NULL, 'eu', '2026-01-01', NULL, false, 'USD', 'Tourist, express, EU'),
    -- ASEAN nationals transit free of charge.
    ('0190a000-0000-7000-8000-000000000021', 'transit',  'standard', NULL, 'asean', '2026-01-01', NULL, true, 'USD', 'Transit, ASEAN (exempt)'),
    ('0190a000-0000-7000-8000-000000000022', 'transit',  'express',  NULL, 'asean', '2026-01-01', NULL, true, 'USD', 'Transit, express, ASEAN (exempt)'),
    -- GCC business travellers priced in Kuwaiti dinar (three decimals).
    ('0190a000-0000-7000-8000-000000000031', 'business', 'standard', NULL, 'gcc', '2026-01-01', NULL, false, 'KWD', 'Business, standard, GCC'),
    -- China: USD by card, CNY by Alipay.
    ('0190a000-0000-7000-8000-000000000041', 'tourist',  'standard', 'CN', NULL, '2026-01-01', NULL, false, 'USD', 'Tourist, standard, China'),
    ('0190a000-0000-7000-8000-000000000042', 'tourist',  'express',  'CN', NULL, '2026-01-01', NULL, false, 'USD', 'Tourist, express, China'),
    ('0190a000-0000-7000-8000-000000000043', 'business', 'standard', 'CN', NULL, '2026-01-01', NULL, false, 'USD', 'Business, standard, China'),
    ('0190a000-0000-7000-8000-000000000044', 'business', 'express',  'CN', NULL, '2026-01-01', NULL, false, 'USD', 'Business, express, China'),
    -- Japan: priced in yen (no minor unit).
    ('0190a000-0000-7000-8000-000000000051', 'tourist',  'standard', 'JP', NULL, '2026-01-01', NULL, false, 'JPY', 'Tourist, standard, Japan')
ON CONFLICT (id) DO NOTHING;

INSERT INTO fee_rule_prices (rule_id, currency, amount_minor) VALUES
    ('0190a000-0000-7000-8000-000000000001', 'USD',  5000),
    ('0190a000-0000-7000-8000-000000000002', 'USD',  9000),
    ('0190a000-0000-7000-8000-000000000003', 'USD', 10000),
    ('0190a000-0000-7000-8000-000000000004', 'USD', 16000),
    ('0190a000-0000-7000-8000-000000000005', 'USD',  2500),
    ('0190a000-0000-7000-8000-000000000006', 'USD',  4000),
    ('0190a000-0000-7000-8000-000000000007', 'USD',  4500),
    ('0190a000-0000-7000-8000-000000000011', 'USD',  4000),
    ('0190a000-0000-7000-8000-000000000011', 'EUR',  3700),
    ('0190a000-0000-7000-8000-000000000012', 'USD',  7500),
    ('0190a000-0000-7000-8000-000000000012', 'EUR',  6900),
    ('0190a000-0000-7000-8000-000000000021', 'USD',     0),
    ('0190a000-0000-7000-8000-000000000022', 'USD',     0),
    ('0190a000-0000-7000-8000-000000000031', 'KWD', 30500),
    ('0190a000-0000-7000-8000-000000000031', 'USD', 10000),
    ('0190a000-0000-7000-8000-000000000041', 'USD',  5000),
    ('0190a000-0000-7000-8000-000000000041', 'CNY', 36000),
    ('0190a000-0000-7000-8000-000000000042', 'USD',  9000),
    ('0190a000-0000-7000-8000-000000000042', 'CNY', 65000),
    ('0190a000-0000-7000-8000-000000000043', 'USD', 10000),
    ('0190a000-0000-7000-8000-000000000043', 'CNY', 72000),
    ('0190a000-0000-7000-8000-000000000044', 'USD', 16000),
    ('0190a000-0000-7000-8000-000000000044', 'CNY', 115000),
    ('0190a000-0000-7000-8000-000000000051', 'JPY',  7500),
    ('0190a000-0000-7000-8000-000000000051', 'USD',  5000)
ON CONFLICT DO NOTHING;
