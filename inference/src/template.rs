//! Chat templates: the model's own Jinja template or a built-in one.
//!
//! A model's `tokenizer.chat_template` is rendered with minijinja set up like
//! Hugging Face transformers' Jinja environment, so a GGUF-driven gateway sees
//! the same prompt as `apply_chat_template(..., tokenize=False)`. Models
//! without a template get a built-in Llama 3.1 or ChatML renderer written in
//! Rust here.
//!
//! Known gaps against jinja2: the `{% generation %}` tag (assistant masks) is
//! not supported, and the `~` operator and `join` filter print `none`/`true`
//! minijinja-style (plain `{{ ... }}` output prints `None`/`True` as Python).
//! The built-ins refuse content-part arrays instead of printing a Python list;
//! the gateway flattens them first.

mod chatml;
mod jinja;
mod llama31;
mod message_fields;
mod python_json;
mod python_repr;
mod tool_args;

pub use tool_args::normalize_tool_call_arguments;

use minijinja::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

/// A built-in chat format for models that ship no template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinTemplate {
    /// Llama 3.1 Instruct (`llama3.1`), including custom and built-in tools.
    Llama31,
    /// Plain ChatML (`chatml`): `<|im_start|>{role}\n{content}<|im_end|>\n`.
    ChatMl,
}

impl BuiltinTemplate {
    /// The name used on the command line and in config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama31 => "llama3.1",
            Self::ChatMl => "chatml",
        }
    }
}

impl std::fmt::Display for BuiltinTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not a built-in template.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown built-in chat template {0:?} (expected \"llama3.1\" or \"chatml\")")]
pub struct UnknownBuiltinTemplate(pub String);

impl FromStr for BuiltinTemplate {
    type Err = UnknownBuiltinTemplate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama3.1" => Ok(Self::Llama31),
            "chatml" => Ok(Self::ChatMl),
            other => Err(UnknownBuiltinTemplate(other.to_owned())),
        }
    }
}

/// What a chat template is rendered from: the shape of a fixture case's `input`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RenderInput {
    /// The conversation, passed to the template as `messages`.
    pub messages: Vec<serde_json::Value>,
    /// Tool definitions, passed as `tools` (`none` when absent).
    #[serde(default)]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Whether to open an assistant turn at the end.
    #[serde(default)]
    pub add_generation_prompt: bool,
    /// Extra template variables (`date_string`, `builtin_tools`, ...).
    #[serde(default)]
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
}

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateError {
    /// The Jinja source does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`; this is that message.
    #[error("{0}")]
    Raised(String),
    /// Rendering failed for another reason (bad input shape, type error, ...).
    #[error("chat template render error: {0}")]
    Render(String),
}

/// A compiled chat template, cheap to render repeatedly and shareable across threads.
#[derive(Debug)]
pub struct ChatTemplate {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Jinja(Box<JinjaTemplate>),
    Builtin(BuiltinTemplate),
}

#[derive(Debug)]
struct JinjaTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles a model's own Jinja chat template (`tokenizer.chat_template`).
    pub fn from_jinja(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, TemplateError> {
        let env = jinja::environment(source).map_err(|e| TemplateError::Syntax(e.to_string()))?;
        Ok(Self {
            kind: Kind::Jinja(Box::new(JinjaTemplate {
                env,
                bos_token: bos_token.to_owned(),
                eos_token: eos_token.to_owned(),
            })),
        })
    }

    /// A built-in template for models that ship none.
    pub fn builtin(which: BuiltinTemplate) -> Self {
        Self {
            kind: Kind::Builtin(which),
        }
    }

    /// Renders the prompt text exactly as the template defines it.
    pub fn render(&self, input: &RenderInput) -> Result<String, TemplateError> {
        match &self.kind {
            Kind::Jinja(template) => template.render(input),
            Kind::Builtin(BuiltinTemplate::Llama31) => llama31::render(input),
            Kind::Builtin(BuiltinTemplate::ChatMl) => chatml::render(input),
        }
    }
}

impl JinjaTemplate {
    fn render(&self, input: &RenderInput) -> Result<String, TemplateError> {
        // transformers passes the special tokens first and lets kwargs
        // override them; the conversation variables are always ours.
        let mut vars: BTreeMap<String, Value> = BTreeMap::new();
        vars.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        vars.insert("eos_token".into(), Value::from(self.eos_token.as_str()));
        for (key, value) in &input.template_kwargs {
            vars.insert(key.clone(), Value::from_serialize(value));
        }
        vars.insert("messages".into(), Value::from_serialize(&input.messages));
        let tools = match &input.tools {
            Some(tools) => Value::from_serialize(tools),
            None => Value::from(()),
        };
        vars.insert("tools".into(), tools);
        vars.insert("documents".into(), Value::from(()));
        vars.insert(
            "add_generation_prompt".into(),
            Value::from(input.add_generation_prompt),
        );

        let template = self
            .env
            .get_template(jinja::TEMPLATE_NAME)
            .map_err(|e| TemplateError::Syntax(e.to_string()))?;
        template
            .render(Value::from_iter(vars))
            .map_err(render_error)
    }
}

/// Maps a minijinja failure to [`TemplateError`], recovering `raise_exception` messages.
fn render_error(err: minijinja::Error) -> TemplateError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = cause {
        if let Some(raised) = current.downcast_ref::<jinja::RaisedException>() {
            return TemplateError::Raised(raised.0.clone());
        }
        cause = current.source();
    }
    TemplateError::Render(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: serde_json::Value) -> RenderInput {
        serde_json::from_value(value).unwrap()
    }

    fn render(source: &str, value: serde_json::Value) -> Result<String, TemplateError> {
        ChatTemplate::from_jinja(source, "<s>", "</s>")?.render(&input(value))
    }

    #[test]
    fn chat_template_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn builtin_names_round_trip() {
        for which in [BuiltinTemplate::Llama31, BuiltinTemplate::ChatMl] {
            assert_eq!(which.name().parse::<BuiltinTemplate>().unwrap(), which);
        }
        assert!("llama3".parse::<BuiltinTemplate>().is_err());
    }

    #[test]
    fn blocks_are_trimmed_and_left_stripped() {
        let source = "{% for m in messages %}\n    {% if m.role %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}\n";
        let out = render(source, json!({"messages": [{"role": "a"}, {"role": "b"}]})).unwrap();
        assert_eq!(out, "[a]\n[b]\n");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let source = "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}";
        let out = render(source, json!({"messages": [{"z": "é<&>", "a": [1, 2.0]}]})).unwrap();
        assert_eq!(
            out,
            "{\"z\": \"é<&>\", \"a\": [1, 2.0]}|{\n  \"z\": \"é<&>\",\n  \"a\": [\n    1,\n    2.0\n  ]\n}"
        );
    }

    #[test]
    fn raise_exception_gives_its_message() {
        let err = render(
            "{% if messages | length == 0 %}{{ raise_exception('no messages!') }}{% endif %}",
            json!({"messages": []}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TemplateError::Raised(m) if m == "no messages!"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "no messages!");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = ChatTemplate::from_jinja("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax(_)), "{err:?}");
    }

    #[test]
    fn other_failures_are_render_errors() {
        let err = render("{{ messages[0].role.name }}", json!({"messages": []})).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
    }

    #[test]
    fn python_string_and_dict_methods_work() {
        let source = "{{ messages[0].content.strip().split(',')[1] }}|{{ messages[0].content.startswith('  a') }}|{% for k, v in messages[0].items() %}{{ k }}={{ v.upper() }};{% endfor %}";
        let out = render(
            source,
            json!({"messages": [{"content": "  a,b ", "role": "x"}]}),
        )
        .unwrap();
        assert_eq!(out, "b|True|content=  A,B ;role=X;");
    }

    #[test]
    fn values_print_like_python() {
        let source = "{{ none }} {{ true }} {{ messages[0].x }} {{ messages[0] }} {{ 1e-05 }}";
        let out = render(source, json!({"messages": [{"x": null, "y": [1.5]}]})).unwrap();
        assert_eq!(out, "None True None {'x': None, 'y': [1.5]} 1e-05");
    }

    #[test]
    fn variables_and_kwargs_reach_the_template() {
        let source = "{{ bos_token }}{{ eos_token }}|{{ tools }}|{{ documents }}|{{ add_generation_prompt }}|{{ custom }}";
        let out = render(
            source,
            json!({"messages": [], "add_generation_prompt": true, "template_kwargs": {"custom": "yes"}}),
        )
        .unwrap();
        assert_eq!(out, "<s></s>|None|None|True|yes");
        let out = render(
            "{{ bos_token }}",
            json!({"messages": [], "template_kwargs": {"bos_token": "<B>"}}),
        )
        .unwrap();
        assert_eq!(out, "<B>");
    }

    #[test]
    fn iterable_test_follows_jinja() {
        let source = "{% for v in messages %}{{ v is iterable }}{% endfor %}";
        let out = render(source, json!({"messages": ["s", [1], {"a": 1}, null, 3]})).unwrap();
        assert_eq!(out, "TrueTrueTrueFalseFalse");
    }

    #[test]
    fn strftime_now_formats_the_current_date() {
        let before = chrono::Local::now().format("%Y-%m-%d").to_string();
        let out = render("{{ strftime_now('%Y-%m-%d') }}", json!({"messages": []})).unwrap();
        let after = chrono::Local::now().format("%Y-%m-%d").to_string();
        // Either side of midnight is fine; anything else is wrong.
        assert!(out == before || out == after, "{out}");
        let err = render("{{ strftime_now('%Q') }}", json!({"messages": []})).unwrap_err();
        assert!(err.to_string().contains("invalid format"), "{err}");
    }

    #[test]
    fn loop_controls_are_enabled() {
        let source =
            "{% for m in messages %}{% if m == 2 %}{% break %}{% endif %}{{ m }}{% endfor %}";
        let out = render(source, json!({"messages": [1, 2, 3]})).unwrap();
        assert_eq!(out, "1");
    }

    #[test]
    fn trim_strips_python_whitespace() {
        let out = render(
            "[{{ messages[0] | trim }}]",
            json!({"messages": ["\u{1f} a \n"]}),
        )
        .unwrap();
        assert_eq!(out, "[a]");
    }
}
