// The checkout page's only script. Cards are tokenised in the browser, with the gateway and its
// publishable key (Stripe.js in production; the sandbox's /v1/payment_methods in test mode, the
// way Stripe.js talks to Stripe): only the resulting pm_... id is sent to evisa-pay. One
// Idempotency-Key per attempt; the pay button is disabled at the first press; the payment is
// followed on its event stream (no polling).
(function () {
  "use strict";
  var status = document.getElementById("status");
  function say(text) { if (status) { status.textContent = text; } }

  // A page waiting for an outcome: follow the stream, reload on a final status.
  var follow = document.getElementById("follow");
  if (follow) {
    var waiting = new EventSource(follow.dataset.events);
    waiting.addEventListener("payment", function (e) {
      var p = JSON.parse(e.data);
      if (p.final) { waiting.close(); window.location.replace(follow.dataset.page); }
    });
    return;
  }

  var form = document.getElementById("card-form");
  if (!form) { return; }
  var cfg = JSON.parse(form.dataset.config);
  var t = cfg.strings;
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (all, name) { return name in values ? values[name] : all; });
  }

  // Expiry, shown before it happens (WCAG 2.2.1): the deadline is on the page; ten minutes
  // before it a warning is announced, and at it paying is turned off.
  var expires = Date.parse(cfg.expires_at);
  function checkExpiry() {
    var left = expires - Date.now();
    if (left <= 0) {
      say(t.expiry_passed);
      Array.prototype.forEach.call(document.querySelectorAll("button"), function (b) { b.disabled = true; });
      return;
    }
    if (left <= 10 * 60 * 1000) {
      // As the page shows the deadline: 24-hour, in UTC, named.
      var when = new Date(expires).toLocaleTimeString(cfg.lang, {
        hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: "UTC", timeZoneName: "short"
      });
      say(fill(t.expiry_warning, { time: when }));
    }
    window.setTimeout(checkExpiry, Math.min(Math.max(left - 10 * 60 * 1000, 1000), 60 * 1000));
  }
  checkExpiry();

  form.hidden = false;
  var summary = document.getElementById("error-summary");
  var list = document.getElementById("error-list");
  var review = document.getElementById("review");
  var payButton = document.getElementById("pay");
  var changeButton = document.getElementById("change");
  var attemptKey = null;
  var tokenise = cfg.tokenizer ? sandboxTokeniser() : stripeTokeniser();
  if (!tokenise) { return; }

  function showErrors(errors) {
    list.textContent = "";
    errors.forEach(function (err) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = "#" + (err.field || "card-number");
      a.textContent = err.text;
      li.appendChild(a);
      list.appendChild(li);
      if (err.field) {
        var box = document.getElementById("field-" + err.field);
        var msg = document.getElementById(err.field + "-error");
        if (box) { box.classList.add("invalid"); }
        if (msg) { msg.textContent = err.text; msg.hidden = false; }
        var input = document.getElementById(err.field);
        if (input) { input.setAttribute("aria-invalid", "true"); }
      }
    });
    summary.hidden = errors.length === 0;
    if (errors.length) { summary.focus(); }
  }
  function clearErrors() {
    Array.prototype.forEach.call(form.querySelectorAll(".field"), function (f) { f.classList.remove("invalid"); });
    Array.prototype.forEach.call(form.querySelectorAll(".field-error"), function (e) { e.hidden = true; e.textContent = ""; });
    Array.prototype.forEach.call(form.querySelectorAll("input"), function (i) { i.removeAttribute("aria-invalid"); });
    showErrors([]);
  }
  function backToForm(errors) {
    review.hidden = true;
    form.hidden = false;
    payButton.disabled = false;
    attemptKey = null;
    showErrors(errors);
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    clearErrors();
    tokenise.check().then(function (checked) {
      if (checked.errors.length) { showErrors(checked.errors); return; }
      // One key per attempt: a double press, or a retry of the same attempt, pays once.
      attemptKey = window.crypto.randomUUID();
      document.getElementById("review-text").textContent =
        fill(t.review_text, { amount: cfg.amount, reference: cfg.reference, last4: checked.last4 || "••••" });
      form.hidden = true;
      review.hidden = false;
      document.getElementById("review-heading").focus();
    });
  });
  changeButton.addEventListener("click", function () {
    backToForm([]);
    var first = form.querySelector("input");
    if (first) { first.focus(); }
  });
  payButton.addEventListener("click", function () {
    if (payButton.disabled) { return; }
    payButton.disabled = true;
    changeButton.disabled = true;
    say(t.processing);
    tokenise.paymentMethod()
      .then(function (pm) { return createPayment(pm); })
      .then(followPayment)
      .catch(function (err) {
        changeButton.disabled = false;
        say("");
        backToForm([{ field: err.field || null, text: err.message || t.error_network }]);
      });
  });

  // Back on the page while the bank's check is pending (a reload, or the browser came back):
  // reopen the check and follow the payment as if Pay had just been pressed.
  if (cfg.resume) {
    form.hidden = true;
    payButton.disabled = true;
    changeButton.disabled = true;
    say(t.authenticating);
    followPayment({ id: cfg.resume }).catch(function (err) {
      changeButton.disabled = false;
      say("");
      backToForm([{ field: err.field || null, text: err.message || t.error_network }]);
    });
  }

  function createPayment(pm) {
    return fetch(cfg.card_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": cfg.csrf, "idempotency-key": attemptKey },
      body: JSON.stringify({ payment_method: pm })
    }).then(function (r) {
      if (r.status === 202) { return r.json(); }
      var text = r.status === 409 ? t.error_in_progress : r.status === 429 ? t.too_many_attempts : t.error_network;
      throw { message: text };
    });
  }

  function followPayment(payment) {
    return new Promise(function (resolve, reject) {
      var stream = new EventSource(cfg.events_base + payment.id + "/events");
      var authenticating = false;
      stream.addEventListener("payment", function (e) {
        var p = JSON.parse(e.data);
        if (p.status === "requires_action" && p.client_secret && !authenticating) {
          authenticating = true;
          say(t.authenticating);
          tokenise.authenticate(p.client_secret);
        }
        if (!p.final) { return; }
        stream.close();
        tokenise.closeAuthentication();
        if (p.status === "succeeded") {
          say(t.paid_heading);
          window.location.replace(cfg.page_url);
          resolve();
        } else {
          reject({ field: "card-number", message: p.message || t.declined_generic });
        }
      });
    });
  }

  // Test mode: the sandbox speaks Stripe's API; the page's own fields, tokenised with the
  // publishable key, as Stripe.js does.
  function sandboxTokeniser() {
    var dialog = document.getElementById("bank-check");
    var frame = document.getElementById("bank-frame");
    function value(id) { return document.getElementById(id).value.trim(); }
    function digits(id) { return value(id).replace(/[\s-]/g, ""); }
    function luhn(n) {
      var sum = 0;
      for (var i = 0; i < n.length; i++) {
        var d = +n[n.length - 1 - i];
        if (i % 2) { d *= 2; if (d > 9) { d -= 9; } }
        sum += d;
      }
      return sum % 10 === 0;
    }
    function expiry() {
      var m = /^(\d{1,2})\s*\/\s*(\d{2}|\d{4})$/.exec(value("card-expiry"));
      if (!m) { return null; }
      var month = +m[1], year = +m[2] < 100 ? 2000 + +m[2] : +m[2];
      var now = new Date();
      if (month < 1 || month > 12 || year < now.getFullYear() || (year === now.getFullYear() && month < now.getMonth() + 1)) { return null; }
      return { month: month, year: year };
    }
    return {
      check: function () {
        var errors = [];
        if (!value("card-name")) { errors.push({ field: "card-name", text: t.error_name }); }
        var n = digits("card-number");
        if (!/^\d{12,19}$/.test(n) || !luhn(n)) { errors.push({ field: "card-number", text: t.error_number }); }
        if (!expiry()) { errors.push({ field: "card-expiry", text: t.error_expiry }); }
        if (!/^\d{3,4}$/.test(digits("card-cvc"))) { errors.push({ field: "card-cvc", text: t.error_cvc }); }
        return Promise.resolve({ errors: errors, last4: n.slice(-4) });
      },
      paymentMethod: function () {
        var exp = expiry();
        var body = new URLSearchParams();
        body.set("type", "card");
        body.set("card[number]", digits("card-number"));
        body.set("card[exp_month]", String(exp.month));
        body.set("card[exp_year]", String(exp.year));
        body.set("card[cvc]", digits("card-cvc"));
        body.set("billing_details[name]", value("card-name"));
        body.set("key", cfg.publishable_key);
        return fetch(cfg.tokenizer + "/v1/payment_methods", { method: "POST", body: body, credentials: "omit" })
          .then(function (r) {
            return r.json().then(function (j) {
              if (r.ok && j.id) { return j.id; }
              throw { field: "card-number", message: t.error_number };
            });
          }, function () { throw { message: t.error_network }; });
      },
      // The sandbox's 3-D Secure page, in a dialog as Stripe.js shows the bank's challenge.
      authenticate: function (clientSecret) {
        var intent = clientSecret.split("_secret_")[0];
        frame.src = cfg.tokenizer + "/sandbox/3ds/" + encodeURIComponent(intent);
        dialog.showModal();
      },
      closeAuthentication: function () { if (dialog.open) { dialog.close(); } frame.removeAttribute("src"); }
    };
  }

  // Production: Stripe.js and its Payment Element (deferred intent, manual payment method
  // creation); the card fields live in Stripe's iframes and never touch this page.
  function stripeTokeniser() {
    if (!window.Stripe || !cfg.publishable_key) { return null; }
    var stripe = window.Stripe(cfg.publishable_key, { locale: cfg.lang === "zh-CN" ? "zh" : "en" });
    var elements = stripe.elements({
      mode: "payment", amount: cfg.amount_minor, currency: cfg.currency,
      paymentMethodCreation: "manual", paymentMethodTypes: ["card"]
    });
    elements.create("payment", { fields: { billingDetails: "auto" } }).mount("#payment-element");
    return {
      check: function () {
        return elements.submit().then(function (r) {
          return { errors: r.error ? [{ field: null, text: r.error.message }] : [], last4: null };
        });
      },
      paymentMethod: function () {
        return stripe.createPaymentMethod({ elements: elements }).then(function (r) {
          if (r.error) { throw { message: r.error.message }; }
          return r.paymentMethod.id;
        });
      },
      authenticate: function (clientSecret) { stripe.handleNextAction({ clientSecret: clientSecret }); },
      closeAuthentication: function () {}
    };
  }
})();
