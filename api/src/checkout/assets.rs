//! The page's one stylesheet and one script, compiled into the binary and served under names
//! that carry a hash of their content, so they can be cached for a year: a new build that
//! changes them changes their names.

use std::sync::LazyLock;

use poem::{Response, handler, http::StatusCode, web::Path};

const CSS: &str = include_str!("../../assets/checkout.css");
const JS: &str = include_str!("../../assets/checkout.js");

/// An embedded file and its hashed name.
pub struct Asset {
    pub name: String,
    body: &'static str,
    content_type: &'static str,
}

fn hashed(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Asset {
        name: format!("{stem}.{hex}.{ext}"),
        body,
        content_type,
    }
}

pub static STYLESHEET: LazyLock<Asset> =
    LazyLock::new(|| hashed("checkout", "css", CSS, "text/css; charset=utf-8"));
pub static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| hashed("checkout", "js", JS, "text/javascript; charset=utf-8"));

/// The path a page links an asset at.
pub fn path(asset: &Asset) -> String {
    format!("/checkout/assets/{}", asset.name)
}

/// `GET /checkout/assets/{name}`: only the current hashed names exist.
#[handler]
pub fn serve(Path(name): Path<String>) -> Response {
    for asset in [&*STYLESHEET, &*SCRIPT] {
        if asset.name == name {
            return Response::builder()
                .content_type(asset.content_type)
                .header("cache-control", "public, max-age=31536000, immutable")
                .body(asset.body);
        }
    }
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("cache-control", "no-store")
        .content_type("text/plain")
        .body("not found")
}
