//! Trades as Alipay reports them (`trade_status` and amounts) and what they mean for a
//! payment; the cashier channels.

use crate::{
    gateway::Report,
    money::{Currency, Money},
    payment::{GatewayFacts, PaymentEvent},
};

/// Which cashier the buyer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Desktop browser: `alipay.trade.page.pay`.
    Page,
    /// Mobile browser: `alipay.trade.wap.pay`.
    Wap,
}

impl Channel {
    pub(super) fn method_and_product(self) -> (&'static str, &'static str) {
        match self {
            Channel::Page => ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
            Channel::Wap => ("alipay.trade.wap.pay", "QUICK_WAP_WAY"),
        }
    }
}

/// A trade as Alipay reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeState {
    /// The buyer has not opened the cashier yet (`ACQ.TRADE_NOT_EXIST`).
    NotCreated,
    WaitBuyerPay,
    /// Paid (`TRADE_SUCCESS` or `TRADE_FINISHED`), with Alipay's trade number and the amount.
    Paid {
        trade_no: String,
        total_amount: String,
    },
    /// Closed unpaid (timed out, cancelled) or fully refunded.
    Closed,
}

impl TradeState {
    /// The state a notify reports.
    pub fn from_notify(status: &str, trade_no: &str, total_amount: &str) -> Option<TradeState> {
        Self::from_status(status, Some(trade_no), Some(total_amount))
    }

    pub(super) fn from_status(
        status: &str,
        trade_no: Option<&str>,
        total: Option<&str>,
    ) -> Option<TradeState> {
        Some(match status {
            "WAIT_BUYER_PAY" => TradeState::WaitBuyerPay,
            "TRADE_SUCCESS" | "TRADE_FINISHED" => TradeState::Paid {
                trade_no: trade_no.unwrap_or_default().to_string(),
                total_amount: total.unwrap_or_default().to_string(),
            },
            "TRADE_CLOSED" => TradeState::Closed,
            _ => return None,
        })
    }

    /// What the trade says about the payment, if anything.
    pub fn report(&self, expired: bool) -> Option<Report> {
        match self {
            TradeState::Paid {
                trade_no,
                total_amount,
            } => Some(Report {
                event: PaymentEvent::GatewaySaysSucceeded,
                facts: GatewayFacts {
                    reference: Some(trade_no.clone()).filter(|t| !t.is_empty()),
                    amount: parse_cny(total_amount),
                    ..GatewayFacts::default()
                },
            }),
            TradeState::Closed => Some(Report {
                event: if expired {
                    PaymentEvent::Expired
                } else {
                    PaymentEvent::Cancelled
                },
                facts: GatewayFacts::default(),
            }),
            TradeState::NotCreated | TradeState::WaitBuyerPay => None,
        }
    }
}

/// `total_amount` (yuan, two decimals) as money. Strict: exactly two decimals.
pub fn parse_cny(amount: &str) -> Option<Money> {
    let (yuan, fen) = amount.split_once('.')?;
    if fen.len() != 2
        || yuan.is_empty()
        || !yuan.bytes().chain(fen.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let minor = yuan
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(fen.parse::<i64>().ok()?)?;
    Money::new(minor, Currency::parse("CNY").ok()?).ok()
}
