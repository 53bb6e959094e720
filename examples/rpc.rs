//! ws-wrapper RPC both ways in one program: a `ws_wrapper_server` on `http_serve` and the Rust `ws_wrapper_client` calling it and answering it.
//!
//! ```text
//! cargo run -p examples --example rpc
//! add(2, 3) = 5
//! the server asked the client to double 21: 42
//! ```
//!
//! The server is the same protocol the JavaScript `ws-wrapper` library
//! speaks, so a browser with `ws-wrapper` can be the client instead.

use http_serve::{ServeConfig, http_serve};
use http_types::Shutdown;
use ws_handler::WsConfig;
use ws_hub::{HubConfig, WsHub};
use ws_wrapper_client::{ClientConfig, PeerError, WrapperClient};
use ws_wrapper_server::{Ctx, WrapperConfig, WrapperError, WrapperServer};

/// The server: `add(a, b)`, and `double-me(x)`, which asks the calling client to `double` x.
pub fn server() -> WrapperServer {
    let server = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
    server.on("add", |_ctx, (a, b): (i64, i64)| async move {
        Ok::<_, WrapperError>(a + b)
    });
    server.on("double-me", |ctx: Ctx, (x,): (i64,)| async move {
        ctx.server()
            .request(ctx.client(), None, "double", vec![x.into()], None)
            .await
            .map_err(|e| WrapperError::new(e.to_string()))
    });
    server
}

/// Serves [`server`] on port 0, connects a client, makes both calls and
/// returns their answers: `(add(2, 3), double(21))`.
pub async fn run() -> Result<(i64, i64), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = Shutdown::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        let rpc = server().handler(WsConfig::default());
        async move { http_serve(listener, rpc, stop.wait(), ServeConfig::default()).await }
    });

    let client = WrapperClient::new(&format!("ws://{addr}/rpc"), ClientConfig::default())?;
    client.on("double", |_ctx, (x,): (i64,)| async move {
        Ok::<_, PeerError>(x * 2)
    });
    client.start().await?;
    let sum: i64 = client.request(None, "add", (2, 3)).await?;
    let doubled: i64 = client.request(None, "double-me", (21,)).await?;
    client.close().await;

    stop.trigger();
    serving.await?;
    Ok((sum, doubled))
}

#[allow(dead_code)] // a binary's entry point; the tests call `run`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (sum, doubled) = run().await?;
    println!("add(2, 3) = {sum}");
    println!("the server asked the client to double 21: {doubled}");
    Ok(())
}
