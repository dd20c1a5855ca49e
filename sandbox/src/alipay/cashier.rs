//! The buyer's side: the cashier page `page.pay` and `wap.pay` show, and its Pay and Cancel
//! buttons. Paying notifies the merchant and sends the browser back to its `return_url`.

use poem::{
    IntoResponse, Response, handler,
    http::StatusCode,
    web::{Data, Html, Path, Redirect},
};

use super::{AlipaySandbox, notify::NotifyKind, trades::Trade, trades::yuan};

/// The cashier page for a trade.
pub(super) fn page(trade: &Trade) -> Response {
    let page = format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>Alipay cashier (test mode)</title></head>
<body><h1>支付宝 · Alipay cashier (test mode)</h1>
<p>Order {0}: ¥{1} — {2}. Status: <span id="status">{3}</span>.</p>
<form method="post" action="/sandbox/alipay/cashier/{0}/pay"><button id="pay" type="submit">Pay</button></form>
<form method="post" action="/sandbox/alipay/cashier/{0}/cancel"><button id="cancel" type="submit">Cancel</button></form>
</body></html>"#,
        trade.out_trade_no,
        yuan(trade.total_fen),
        html_escape(&trade.subject),
        trade.status.as_str()
    );
    Html(page).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[handler]
pub(super) async fn cashier_action(
    Path((out_trade_no, action)): Path<(String, String)>,
    sandbox: Data<&AlipaySandbox>,
) -> Response {
    let return_url = {
        let mut s = sandbox.state.lock().expect("sandbox state");
        let Some(trade) = s.trades.get(&out_trade_no) else {
            return (StatusCode::NOT_FOUND, "no such order").into_response();
        };
        let (status, return_url) = (trade.status, trade.return_url.clone());
        match action.as_str() {
            "pay" => {
                if !s.trades.pay(&out_trade_no) {
                    return (
                        StatusCode::CONFLICT,
                        format!("this order is {}", status.as_str()),
                    )
                        .into_response();
                }
            }
            // The buyer leaves the cashier; the trade waits until it is closed or expires.
            "cancel" => {}
            _ => return (StatusCode::NOT_FOUND, "unknown action").into_response(),
        }
        return_url
    };
    if action == "pay" {
        sandbox.notify(&out_trade_no, NotifyKind::Payment, None);
    }
    if return_url.is_empty() {
        return Html("<!doctype html><p>Done. You can close this page.</p>").into_response();
    }
    // The browser goes back to the merchant. Anything in this URL is advisory only.
    let mut url = match url::Url::parse(&return_url) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad return_url").into_response(),
    };
    url.query_pairs_mut()
        .append_pair("out_trade_no", &out_trade_no)
        .append_pair("method", "alipay.trade.page.pay.return");
    Redirect::see_other(url.as_str()).into_response()
}
