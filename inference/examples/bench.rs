//! The inference benchmark without building the gateway (same as `warden
//! bench`): `cargo run --release --example bench -p warden-inference --
//! [--model PATH] [--threads 1,2] [--streams 4] [--repeats 2] [--json]`.

use std::path::PathBuf;

use warden_inference::bench::{run_with_progress_bar, BenchConfig};

fn default_model() -> PathBuf {
    let dir = std::env::var("WARDEN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/warden/models")
        });
    dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn main() {
    let mut config = BenchConfig::new(default_model());
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--model" => config.model = PathBuf::from(value()),
            "--threads" => {
                config.threads = value()
                    .split(',')
                    .map(|t| {
                        t.parse()
                            .unwrap_or_else(|_| fail("--threads takes e.g. 1,2"))
                    })
                    .collect()
            }
            "--streams" => config.streams = value().parse().unwrap_or_else(|_| fail("--streams N")),
            "--repeats" => config.repeats = value().parse().unwrap_or_else(|_| fail("--repeats N")),
            "--json" => json = true,
            other => fail(&format!("unknown argument {other}")),
        }
    }
    match run_with_progress_bar(&config) {
        Ok(r) if json => println!("{}", r.to_json()),
        Ok(r) => print!("{r}"),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}
