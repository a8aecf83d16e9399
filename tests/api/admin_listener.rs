//! The admin listener (`OAUTH_PROXY_ADMIN_BIND`): a port of its own, apart
//! from the one clients reach.

use crate::helpers::TestApp;

#[actix_web::test]
async fn metrics_are_served_on_the_admin_listener_and_not_on_the_public_one() {
    let app = TestApp::spawn().await;
    let scrape = app.admin.get("/metrics").await;
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    assert!(scrape
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(app.get("/metrics").await.status, 404);
    app.stop().await;
}
