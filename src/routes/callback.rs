//! The upstream callback at `OAUTH_PROXY_REDIRECT_PATH`.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{redirect, BrowserCookies};
use crate::audit::RequestContext;
use crate::error::{Error, PageReason};
use crate::proxy::{CallbackParams, OAuthProxy};

pub async fn callback(
    req: HttpRequest,
    ctx: RequestContext,
    session: Session,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    let params: CallbackParams =
        serde_urlencoded::from_str(req.query_string()).map_err(|_| Error::page(PageReason::CallbackUnreadable))?;
    let (cookies, browser) = BrowserCookies::read(&req, session, &proxy);
    let to_client = proxy
        .handle_callback(params, &browser, &ctx)
        .await
        .map_err(Error::for_browser)?;
    Ok(redirect(to_client.as_str(), Some(&cookies)))
}
