//! Starting the HTTP server: the app, its error handlers, SIGHUP reloads.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::error::{json_error, query_error};
use crate::routes;
use crate::state::AppState;

/// A running gateway.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Stops it.
    pub handle: ServerHandle,
    /// Shared state (for tests and shutdown).
    pub state: web::Data<AppState>,
    /// Resolves when the server stops.
    pub server: actix_web::dev::Server,
}

/// Builds the state and binds the server (not yet running: await `server`).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let addr = config.listen_addr()?;
    let workers = config.server.workers;
    let limit = config.limits.max_body_bytes;
    let header_timeout = config.limits.header_timeout();
    let state = web::Data::new(AppState::build(config).await?);
    let data = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(from_fn(crate::body_timeout::middleware))
            .wrap(from_fn(crate::request_id::middleware))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .disable_signals()
    .client_request_timeout(header_timeout)
    .shutdown_timeout(5);
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.bind(addr)?;
    let addr = server.addrs()[0];
    let server = server.run();
    Ok(Running {
        addr,
        handle: server.handle(),
        state,
        server,
    })
}

/// Reloads policies on SIGHUP, stops on SIGINT/SIGTERM; runs until stopped.
/// Logging and tracing are the caller's ([`crate::telemetry::install`]).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    tracing::info!(addr = %running.addr, "warden gateway listening");
    let store = Arc::clone(&running.state.policies);
    let handle = running.handle.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        actix_web::rt::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading policies");
                let store = Arc::clone(&store);
                // Errors are logged and kept for /readyz by the store.
                let _ = tokio::task::spawn_blocking(move || store.reload()).await;
            }
        });
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stopper = handle.clone();
        actix_web::rt::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping");
            stopper.stop(true).await;
        });
    }
    running.server.await?;
    running.state.stop_watching();
    if let Some(audit) = &running.state.audit {
        if let Err(e) = audit.shutdown().await {
            tracing::error!(error = %e, "audit shutdown");
        }
    }
    Ok(())
}
