//! The deployment files agree with each other: docker-compose.yml's
//! services, ports, volumes, health checks and start order, the collector's
//! pipeline into Jaeger, the container's warden.toml and the Dockerfile.
//! (No Docker engine runs here: this is what can be checked without one.)

use std::path::{Path, PathBuf};

use serde_norway::Value;
use warden_gateway::config::{Config, ModelSource, OtlpProtocol};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `host:container[:mode]` volume entries of a service as (source, target, read-only).
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    strings(&service["volumes"])
        .iter()
        .map(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            assert!((2..=3).contains(&parts.len()), "volume {m:?}");
            (
                parts[0].to_owned(),
                parts[1].to_owned(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

/// The `host:container` port mappings of a service.
fn ports(service: &Value) -> Vec<(u16, u16)> {
    strings(&service["ports"])
        .iter()
        .map(|p| {
            let (h, c) = p.split_once(':').unwrap();
            (h.parse().unwrap(), c.parse().unwrap())
        })
        .collect()
}

/// `host:port` of an `http://host:port` URL or a bare `host:port`.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (h, p) = authority.rsplit_once(':').unwrap();
    (h.to_owned(), p.parse().unwrap())
}

#[test]
fn compose_services_reference_each_other() {
    let root = root();
    let compose = yaml(&root.join("docker-compose.yml"));
    let services = &compose["services"];
    for name in ["gateway", "postgres", "otel-collector", "jaeger"] {
        assert!(services[name].is_mapping(), "service {name} missing");
    }
    let named_volumes: Vec<String> = compose["volumes"]
        .as_mapping()
        .expect("top-level volumes")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    // A mount's source is a declared named volume or a path in the repository.
    let check_sources = |service: &str| {
        for (source, target, _) in mounts(&services[service]) {
            if source.starts_with("./") {
                // ./models is the operator's model directory, not in git.
                if source != "./models" {
                    assert!(root.join(&source).exists(), "{service}: {source} missing");
                }
            } else {
                assert!(
                    named_volumes.contains(&source),
                    "{service}: volume {source} (at {target}) not declared"
                );
            }
        }
    };
    for s in ["gateway", "postgres", "otel-collector", "jaeger"] {
        check_sources(s);
    }

    // PostgreSQL: data on a volume, a health check the gateway waits for.
    let pg = &services["postgres"];
    assert!(pg["image"].as_str().unwrap().starts_with("postgres:"));
    assert!(mounts(pg)
        .iter()
        .any(|(s, t, _)| named_volumes.contains(s) && t == "/var/lib/postgresql/data"));
    let test = strings(&pg["healthcheck"]["test"]).join(" ");
    assert!(test.contains("pg_isready"), "{test}");
    let user = pg["environment"]["POSTGRES_USER"].as_str().unwrap();
    let password = pg["environment"]["POSTGRES_PASSWORD"].as_str().unwrap();
    let database = pg["environment"]["POSTGRES_DB"].as_str().unwrap();
    assert!(test.contains(&format!("-U {user}")) && test.contains(&format!("-d {database}")));

    // The gateway: built from the Dockerfile, started after PostgreSQL is healthy.
    let gw = &services["gateway"];
    let build = &gw["build"];
    assert_eq!(build["context"].as_str(), Some("."));
    let dockerfile = build["dockerfile"].as_str().unwrap();
    assert!(root.join(dockerfile).is_file());
    assert_eq!(
        gw["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert!(gw["depends_on"]["otel-collector"]["condition"].is_string());
    assert!(strings(&gw["healthcheck"]["test"])
        .join(" ")
        .contains("/healthz"));
    let gw_mounts = mounts(gw);
    let command = strings(&gw["command"]);
    let config_at = command
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("serve --config PATH")
        .clone();
    let (config_src, _, ro) = gw_mounts
        .iter()
        .find(|(_, t, _)| *t == config_at)
        .expect("the config file is mounted")
        .clone();
    assert!(ro);
    let db_url = gw["environment"]["DATABASE_URL"].as_str().unwrap();
    assert_eq!(
        db_url,
        format!("postgres://{user}:{password}@postgres:5432/{database}")
    );

    // The container's warden.toml agrees with the compose file.
    let env = [("DATABASE_URL".to_owned(), db_url.to_owned())];
    let config = Config::parse(
        Path::new(&config_src),
        &std::fs::read_to_string(root.join(&config_src)).unwrap(),
        env,
    )
    .unwrap();
    // Not `validate`: the model and policy paths exist only in the container.
    let listen_port: u16 = config
        .server
        .listen
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(
        config.server.listen.starts_with("0.0.0.0:"),
        "reachable from outside the container"
    );
    assert!(ports(gw).iter().any(|(_, c)| *c == listen_port));
    assert!(config.audit.enabled);
    let spool = config.audit.spool_dir.to_str().unwrap();
    assert!(
        gw_mounts
            .iter()
            .any(|(s, t, _)| t == spool && named_volumes.contains(s)),
        "the audit spool {spool} is on a volume"
    );
    let policies = config.policies.dir.to_str().unwrap();
    assert!(gw_mounts
        .iter()
        .any(|(s, t, _)| t == policies && root.join(s).is_dir()));
    let (_, models_at, models_ro) = gw_mounts
        .iter()
        .find(|(s, _, _)| s == "./models")
        .expect("the model volume");
    assert!(models_ro);
    for m in &config.models {
        if let ModelSource::Local { path, .. } = &m.source {
            assert!(
                path.starts_with(models_at),
                "{path:?} is not on the model volume"
            );
        }
    }

    // Traces: gateway → collector (a port it listens on) → Jaeger.
    let endpoint = config
        .telemetry
        .otlp_endpoint
        .clone()
        .expect("otlp_endpoint");
    let (host, port) = host_port(&endpoint);
    assert_eq!(host, "otel-collector");
    let collector = &services["otel-collector"];
    let (collector_config, collector_target, _) = mounts(collector)
        .into_iter()
        .find(|(s, _, _)| s.ends_with(".yaml"))
        .expect("the collector's config is mounted");
    assert!(strings(&collector["command"])
        .iter()
        .any(|a| a.ends_with(&collector_target)));
    let otel = yaml(&root.join(&collector_config));
    let protocol = match config.telemetry.protocol {
        OtlpProtocol::HttpProtobuf => "http",
        OtlpProtocol::Grpc => "grpc",
    };
    let receiver = otel["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
        .as_str()
        .expect("the collector receives the gateway's protocol");
    assert_eq!(host_port(receiver).1, port);
    let pipeline = &otel["service"]["pipelines"]["traces"];
    assert!(strings(&pipeline["receivers"]).contains(&"otlp".to_owned()));
    let exporters = strings(&pipeline["exporters"]);
    let to_jaeger = exporters
        .iter()
        .find(|e| e.starts_with("otlp"))
        .expect("an OTLP exporter");
    let (jaeger_host, jaeger_port) = host_port(
        otel["exporters"][to_jaeger.as_str()]["endpoint"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(jaeger_host, "jaeger");
    assert_eq!(jaeger_port, 4317, "Jaeger's OTLP gRPC port");
    for p in strings(&pipeline["processors"]) {
        assert!(otel["processors"][p.as_str()].is_mapping(), "processor {p}");
    }
    let jaeger = &services["jaeger"];
    assert!(jaeger["image"]
        .as_str()
        .unwrap()
        .starts_with("jaegertracing/"));
    assert_eq!(
        jaeger["environment"]["COLLECTOR_OTLP_ENABLED"].as_str(),
        Some("true")
    );
    assert!(ports(jaeger).contains(&(16686, 16686)), "the Jaeger UI");
}

#[test]
fn dockerfile_builds_then_runs_slim_as_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].contains(" AS build"));
    let runtime_at = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[runtime_at..];
    assert!(runtime[0].contains("slim"), "{}", runtime[0]);
    assert!(runtime
        .iter()
        .any(|l| l.starts_with("COPY --from=build") && l.contains("warden")));
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let user = user.split(':').next().unwrap().trim();
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(runtime.contains(&"EXPOSE 8080"));
    assert!(runtime
        .iter()
        .any(|l| l.starts_with("ENTRYPOINT") && l.contains("warden")));
    // The model is mounted, never fetched or copied into the image.
    assert!(!text.contains(".gguf"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}
