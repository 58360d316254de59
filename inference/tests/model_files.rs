//! Loading: clear errors for bad model files, and safetensors weights that
//! behave like the GGUF they were exported from.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use warden_inference::template::RenderInput;
use warden_inference::{argmax, logits_rows, InferenceError, Logits, Model};

fn load_err(path: &Path) -> String {
    match Model::load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A minimal GGUF v3 file: the given string metadata and one tensor of
/// `dtype` (a ggml type id) with 32 elements of zero data.
fn tiny_gguf(path: &Path, metadata: &[(&str, &str)], dtype: u32, type_size: usize) {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        string(&mut b, k);
        b.extend(8u32.to_le_bytes()); // string value
        string(&mut b, v);
    }
    string(&mut b, "token_embd.weight");
    b.extend(1u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(dtype.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(vec![0u8; type_size]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_missing_file_is_named() {
    let err = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn a_file_that_is_not_gguf_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, b"this is a text file, not a model").unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("notes.gguf") && err.contains("GGUF magic"),
        "{err}"
    );
}

#[test]
fn a_truncated_download_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let full = std::fs::read(common::model_path()).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    // Cut inside the header too.
    std::fs::write(&path, &full[..4096]).unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("cut.gguf") && err.contains("not a valid GGUF"),
        "{err}"
    );
}

#[test]
fn a_corrupt_header_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.gguf");
    let mut bytes = std::fs::read(common::model_path()).unwrap();
    // Claim an absurd number of tensors.
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("corrupt.gguf") && err.contains("not a valid GGUF"),
        "{err}"
    );
}

#[test]
fn an_unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    tiny_gguf(
        &path,
        &[
            ("general.architecture", "mamba"),
            ("tokenizer.ggml.model", "gpt2"),
        ],
        0,
        128,
    );
    let err = load_err(&path);
    assert!(
        err.contains("mamba.gguf") && err.contains("\"mamba\""),
        "{err}"
    );
    let e = Model::load_gguf(&path).err().unwrap();
    assert!(
        matches!(e, InferenceError::UnsupportedArchitecture { .. }),
        "{e}"
    );
}

#[test]
fn an_unsupported_quantisation_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iq.gguf");
    // Type 16 is IQ2_XXS, which candle cannot compute with.
    tiny_gguf(&path, &[("general.architecture", "llama")], 16, 66);
    let err = Model::load(&path).err().unwrap();
    assert!(
        matches!(err, InferenceError::UnsupportedQuantization { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("iq.gguf"), "{err}");
}

#[test]
fn a_safetensors_directory_without_weights_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "llama", "num_attention_heads": 9, "hidden_size": 576,
            "num_hidden_layers": 30, "intermediate_size": 1536, "max_position_embeddings": 8192}"#,
    )
    .unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("no *.safetensors"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("safetensors"),
        "{err}"
    );
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("unsupported architecture"), "{err}");
}

/// GGUF converters permute Q/K rows so RoPE pairs adjacent dimensions; undo
/// it to get Hugging Face's layout.
fn unpermute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, out / heads / 2, 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

#[test]
fn safetensors_export_of_the_bundled_model_runs_like_the_gguf() {
    use candle_core::quantized::gguf_file::Content;
    let gguf_path = common::model_path();
    let gguf_model = common::model();
    let mut file = std::fs::File::open(&gguf_path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let cfg = gguf_model.llama().config().clone();
    let mut tensors = std::collections::HashMap::new();
    let mut get = |name: &str| {
        content
            .tensor(&mut file, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    tensors.insert(
        "model.embed_tokens.weight".to_string(),
        get("token_embd.weight"),
    );
    tensors.insert("model.norm.weight".to_string(), get("output_norm.weight"));
    for i in 0..cfg.n_layers {
        let g = |s: &str| format!("blk.{i}.{s}.weight");
        let h = |s: &str| format!("model.layers.{i}.{s}.weight");
        tensors.insert(h("input_layernorm"), get(&g("attn_norm")));
        tensors.insert(
            h("self_attn.q_proj"),
            unpermute(&get(&g("attn_q")), cfg.n_heads),
        );
        tensors.insert(
            h("self_attn.k_proj"),
            unpermute(&get(&g("attn_k")), cfg.n_kv_heads),
        );
        tensors.insert(h("self_attn.v_proj"), get(&g("attn_v")));
        tensors.insert(h("self_attn.o_proj"), get(&g("attn_output")));
        tensors.insert(h("post_attention_layernorm"), get(&g("ffn_norm")));
        tensors.insert(h("mlp.gate_proj"), get(&g("ffn_gate")));
        tensors.insert(h("mlp.up_proj"), get(&g("ffn_up")));
        tensors.insert(h("mlp.down_proj"), get(&g("ffn_down")));
    }
    let dir = tempfile::tempdir().unwrap();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": cfg.hidden, "intermediate_size": cfg.ffn,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "num_hidden_layers": cfg.n_layers, "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.context_len,
        "vocab_size": cfg.vocab, "tie_word_embeddings": true, "eos_token_id": 2
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        gguf_model.tokenizer().to_tokenizer_json().unwrap(),
    )
    .unwrap();
    let mut file = std::fs::File::open(&gguf_path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let template = content.metadata["tokenizer.chat_template"]
        .to_string()
        .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::json!({"chat_template": template, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
            .to_string(),
    )
    .unwrap();

    let dense = Model::load(dir.path()).unwrap();
    assert_eq!(dense.llama().config(), gguf_model.llama().config());
    // Same prompt ids through the exported tokenizer and template.
    let case = &common::fixture("generation/smollm2_greedy.json")[0];
    let input: RenderInput = serde_json::from_value(
        serde_json::json!({"messages": case["messages"], "add_generation_prompt": true}),
    )
    .unwrap();
    let want: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
    assert_eq!(dense.encode_chat(&input).unwrap(), want);
    // And logits that agree with llama.cpp's within the fixture tolerances.
    let tf = &common::fixture("generation/smollm2_teacher_forced.json")[0];
    let ids: Vec<u32> = serde_json::from_value(tf["ids"].clone()).unwrap();
    let mut cache = dense.new_cache();
    let rows = logits_rows(&dense.forward(&ids, &mut cache, Logits::All).unwrap()).unwrap();
    let mut agree = 0;
    for (row, pos) in rows.iter().zip(tf["positions"].as_array().unwrap()) {
        let top: u32 = pos["top_ids"][0].as_u64().unwrap() as u32;
        let logit = pos["top_logits"][0].as_f64().unwrap();
        agree += usize::from(argmax(row) == top);
        assert!((f64::from(row[top as usize]) - logit).abs() <= 1.5);
    }
    assert!(
        agree * 10 >= rows.len() * 9,
        "agreement {agree}/{}",
        rows.len()
    );
}
