//! Upstream OpenAI-compatible servers: a pooled client, streaming
//! passthrough, deadlines, and the upstream's failures as 502/504.

use std::time::Duration;

use std::marker::PhantomData;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::sync::mpsc;

use super::StreamEvent;
use crate::chat::{
    content_text, ChatRequest, GenParams, Generated, RawAnswer, SentChoice, StreamItem, Usage,
};
use crate::error::GenerateError;

/// One upstream model.
pub struct UpstreamGenerator {
    endpoint: String,
    // Parsed once: reqwest would parse the text again for every request.
    url: Option<reqwest::Url>,
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
            url: reqwest::Url::parse(&endpoint).ok(),
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
        let mut request = match &self.url {
            Some(url) => self.client.post(url.clone()),
            // Unparseable: reqwest reports the error as it did before.
            None => self.client.post(&self.endpoint),
        }
        .json(body);
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
        match fast_answer(&bytes) {
            Some(generated) => Ok(generated),
            None => general_answer(bytes),
        }
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

/// An answer read as a whole `Value`: any shape, and the one place that
/// decides what is malformed.
fn general_answer(bytes: Bytes) -> Result<Generated, GenerateError> {
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
        // Written back whole: this answer is not in the pass-through form.
        raw: Some(RawAnswer {
            body: bytes,
            sent: None,
        }),
    })
}

/// The fields of an answer Warden reads, parsed without building the
/// whole document as a `Value` (most of an answer is passed through
/// untouched). Shapes outside these types fail here and go the general way.
#[derive(Deserialize)]
struct FastAnswer {
    choices: Vec<MapOnly<FastChoice>>,
    #[serde(default)]
    usage: Value,
    #[serde(default, deserialize_with = "present")]
    warden: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct FastChoice {
    message: MapOnly<FastMessage>,
    #[serde(default, deserialize_with = "present")]
    finish_reason: Option<Option<String>>,
}

#[derive(Deserialize)]
struct FastMessage {
    #[serde(default, deserialize_with = "present")]
    content: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    tool_calls: Option<Option<Vec<Value>>>,
}

/// `Some` for a member that is there (even as `null`), `None` when absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A struct read from a JSON object only: derived struct impls also take
/// arrays (by position), which the general path treats as malformed.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Objects<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Objects<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Objects(PhantomData)).map(MapOnly)
    }
}

/// The answer read the fast way, or `None` to use the general path.
fn fast_answer(bytes: &Bytes) -> Option<Generated> {
    let MapOnly(answer) = serde_json::from_slice::<MapOnly<FastAnswer>>(bytes).ok()?;
    let MapOnly(choice) = answer.choices.into_iter().next()?;
    let MapOnly(message) = choice.message;
    // As Warden writes them back: content present (string or null),
    // tool_calls absent or a list, finish_reason a string, no `warden`.
    let as_written = message.content.is_some()
        && !matches!(message.tool_calls, Some(None))
        && matches!(choice.finish_reason, Some(Some(_)))
        && answer.warden.is_none();
    let content = message.content.flatten();
    let tool_calls = message.tool_calls.flatten();
    let finish_reason = choice
        .finish_reason
        .flatten()
        .unwrap_or_else(|| "stop".to_owned());
    let sent = as_written.then(|| SentChoice {
        content: content.clone(),
        tool_calls: tool_calls.clone(),
        finish_reason: finish_reason.clone(),
    });
    Some(Generated {
        content,
        tool_calls,
        finish_reason,
        usage: serde_json::from_value::<Usage>(answer.usage).unwrap_or_default(),
        raw: Some(RawAnswer {
            body: bytes.clone(),
            sent,
        }),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\" \u00e9"},
        "finish_reason":"stop","logprobs":null}],
        "usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}
"#;

    fn both(body: &str) -> (Option<Generated>, Result<Generated, GenerateError>) {
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        (fast_answer(&bytes), general_answer(bytes))
    }

    /// The fast path reads what the general path reads.
    fn same_reading(body: &str) -> Generated {
        let (fast, general) = both(body);
        let fast = fast.unwrap_or_else(|| panic!("fast path refused {body}"));
        let general = general.unwrap();
        assert_eq!(fast.content, general.content, "{body}");
        assert_eq!(fast.tool_calls, general.tool_calls, "{body}");
        assert_eq!(fast.finish_reason, general.finish_reason, "{body}");
        assert_eq!(fast.usage, general.usage, "{body}");
        fast
    }

    #[test]
    fn a_plain_answer_passes_through() {
        let g = same_reading(PLAIN);
        assert_eq!(g.content.as_deref(), Some("Hi \"there\" é"));
        assert_eq!(g.usage, Usage::new(5, 2));
        let sent = g.raw.unwrap().sent.expect("pass-through form");
        assert_eq!(sent.content, g.content);
        assert_eq!(sent.finish_reason, "stop");
        assert_eq!(sent.tool_calls, None);
    }

    #[test]
    fn tool_calls_and_null_content_pass_through() {
        let body = r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
        let g = same_reading(body);
        assert_eq!(g.content, None);
        assert_eq!(g.tool_calls.as_ref().map(Vec::len), Some(1));
        assert!(g.raw.unwrap().sent.is_some());
    }

    #[test]
    fn answers_warden_rewrites_are_read_but_not_passed_through() {
        for body in [
            // No content member: Warden writes `content: null`.
            r#"{"choices":[{"message":{"role":"assistant"},"finish_reason":"stop"}]}"#,
            // A null finish_reason becomes "stop".
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":null}]}"#,
            // No finish_reason at all.
            r#"{"choices":[{"message":{"content":"x"}}]}"#,
            // tool_calls null is dropped.
            r#"{"choices":[{"message":{"content":"x","tool_calls":null},"finish_reason":"stop"}]}"#,
            // The upstream's own `warden` member is replaced.
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"warden":null}"#,
            // Usage in another shape is ignored, as by the general path.
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":"a"}}"#,
        ] {
            let g = same_reading(body);
            assert!(g.raw.unwrap().sent.is_none(), "{body}");
        }
    }

    #[test]
    fn other_shapes_go_the_general_way() {
        for body in [
            // Content parts are joined into one string.
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},"finish_reason":"stop"}]}"#,
            // A finish_reason that is not a string.
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":1}]}"#,
            // tool_calls that are not a list.
            r#"{"choices":[{"message":{"content":"x","tool_calls":{}},"finish_reason":"stop"}]}"#,
            // A later choice of another shape.
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"},7]}"#,
            // Duplicate members: the general path keeps the last.
            r#"{"choices":[{"message":{"content":"x","content":"y"},"finish_reason":"stop"}]}"#,
        ] {
            let (fast, general) = both(body);
            assert!(fast.is_none(), "{body}");
            assert!(general.unwrap().raw.unwrap().sent.is_none());
        }
        // Malformed answers are the general path's to refuse.
        for body in [
            "not json",
            "[]",
            r#"{"choices":[]}"#,
            r#"{"choices":[{"message":"hi"}]}"#,
            r#"{"choices":[{"message":["hi"]}]}"#,
            r#"{"choices":[[{"content":"x"}, "stop"]]}"#,
            r#"[[[{"content":"x"}, "stop"]]]"#,
        ] {
            let (fast, general) = both(body);
            assert!(fast.is_none(), "{body}");
            assert!(general.is_err(), "{body}");
        }
    }
}
