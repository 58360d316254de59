//! Upstream OpenAI-compatible servers: a pooled client, streaming
//! passthrough, deadlines, and the upstream's failures as 502/504.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::StreamEvent;
use crate::chat::{content_text, ChatRequest, GenParams, Generated, StreamItem, Usage};
use crate::error::GenerateError;

/// One upstream model.
pub struct UpstreamGenerator {
    endpoint: String,
    api_key: Option<String>,
    upstream_model: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl UpstreamGenerator {
    /// An upstream at `base_url` (`/chat/completions` is appended; a base
    /// without `/v1` gets `/v1/chat/completions`), sharing `client`'s pool.
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<String>,
        upstream_model: String,
        timeout: Duration,
    ) -> Self {
        let base = base_url.trim_end_matches('/');
        let endpoint = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        Self {
            endpoint,
            api_key,
            upstream_model,
            client,
            timeout,
        }
    }

    fn body(&self, req: &ChatRequest, params: &GenParams, stream: bool) -> Value {
        let mut body = Value::Object(req.body().clone());
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), self.upstream_model.clone().into());
            // Warden's metadata is for Warden.
            obj.remove("metadata");
            obj.remove("max_completion_tokens");
            obj.insert("max_tokens".into(), params.max_tokens.into());
            if stream {
                obj.insert("stream".into(), true.into());
            } else {
                obj.remove("stream");
                obj.remove("stream_options");
            }
        }
        body
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, GenerateError> {
        let mut request = self.client.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => return Err(timeout_error(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => return Err(timeout_error(self.timeout)),
            Ok(Err(e)) => {
                return Err(GenerateError::BadGateway(format!(
                    "the upstream could not be reached: {}",
                    error_chain(&e)
                )))
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = tokio::time::timeout(self.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(GenerateError::BadGateway(format!(
            "the upstream answered HTTP {}: {message}",
            status.as_u16()
        )))
    }

    /// One whole answer.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        params: &GenParams,
    ) -> Result<Generated, GenerateError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response = self.send(&self.body(req, params, false)).await?;
        let bytes = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Err(_) => return Err(timeout_error(self.timeout)),
            Ok(Err(e)) => {
                return Err(GenerateError::BadGateway(format!(
                    "reading the upstream's answer failed: {}",
                    error_chain(&e)
                )))
            }
            Ok(Ok(b)) => b,
        };
        let raw: Value = serde_json::from_slice(&bytes).map_err(|e| {
            GenerateError::BadGateway(format!("the upstream's answer is not JSON: {e}"))
        })?;
        let choice = &raw["choices"][0];
        let message = &choice["message"];
        if !message.is_object() {
            return Err(GenerateError::BadGateway(
                "the upstream's answer has no choices[0].message".into(),
            ));
        }
        let usage = serde_json::from_value::<Usage>(raw["usage"].clone()).unwrap_or_default();
        Ok(Generated {
            content: message
                .get("content")
                .filter(|c| !c.is_null())
                .map(|c| content_text(Some(c))),
            tool_calls: message["tool_calls"].as_array().cloned(),
            finish_reason: choice["finish_reason"]
                .as_str()
                .unwrap_or("stop")
                .to_owned(),
            usage,
            raw: Some(raw),
        })
    }

    /// A streamed answer: the upstream's chunks as they come. The deadline
    /// applies to the response head and then to each silence between chunks.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        params: &GenParams,
    ) -> Result<mpsc::Receiver<StreamEvent>, GenerateError> {
        let response = self.send(&self.body(req, params, true)).await?;
        let (tx, rx) = mpsc::channel(64);
        let idle = self.timeout;
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer: Vec<u8> = Vec::new();
            loop {
                let next = match tokio::time::timeout(idle, body.next()).await {
                    Err(_) => Err(timeout_error(idle)),
                    Ok(None) => Err(GenerateError::BadGateway(
                        "the upstream closed the stream before [DONE]".into(),
                    )),
                    Ok(Some(Err(e))) => Err(GenerateError::BadGateway(format!(
                        "the upstream stream failed: {}",
                        error_chain(&e)
                    ))),
                    Ok(Some(Ok(bytes))) => Ok(bytes),
                };
                let bytes = match next {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(StreamEvent::Failed(e)).await;
                        return;
                    }
                };
                buffer.extend_from_slice(&bytes);
                while let Some(pos) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\r', '\n']);
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim_start();
                    if data == "[DONE]" {
                        return;
                    }
                    let item = match parse_chunk(data) {
                        Ok(item) => StreamEvent::Item(item),
                        Err(e) => StreamEvent::Failed(e),
                    };
                    let failed = matches!(item, StreamEvent::Failed(_));
                    // The caller left: dropping the response closes the upstream connection.
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Reads one upstream chunk.
fn parse_chunk(data: &str) -> Result<StreamItem, GenerateError> {
    let v: Value = serde_json::from_str(data).map_err(|e| {
        GenerateError::BadGateway(format!("the upstream sent a chunk that is not JSON: {e}"))
    })?;
    if let Some(err) = v.get("error") {
        return Err(GenerateError::BadGateway(format!(
            "the upstream failed mid-stream: {}",
            err["message"].as_str().unwrap_or("unknown error")
        )));
    }
    let choice = &v["choices"][0];
    let text = choice["delta"]["content"].as_str().unwrap_or("").to_owned();
    let has_tools = choice["delta"]["tool_calls"].is_array();
    Ok(StreamItem {
        is_content: !text.is_empty() || has_tools,
        text,
        finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
        usage: serde_json::from_value(v["usage"].clone()).ok(),
        payload: data.to_owned(),
    })
}

fn timeout_error(after: Duration) -> GenerateError {
    GenerateError::Timeout(format!(
        "the upstream did not answer within {:.1} s",
        after.as_secs_f64()
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
