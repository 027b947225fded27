//! [`EmbeddedBackend`]: serves GGUF models in-process, one engine thread per model.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use prometheus_client::registry::Registry;
use tm_backend::{
    Backend, BackendError, GenerateRequest, ModelInfo, ModelMemory, OutputFormat, Prepared, PromptInput,
    SamplingParams, TokenizeInput, Tokenized, ToolChoice, Tools,
};
use tm_scheduler::{EngineConfig, EngineMetrics, SchedulerHandle, SeqRequest, SpillConfig, Token};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::constraint::{Constraint, GrammarEngine, Grammars, CALL_OPEN};
use crate::engine_model::{ContextShape, LlamaEngineModel};
use crate::load::load_model;
use crate::output::Calls;
use crate::sampler::SamplerSpec;
use crate::template::{ChatTemplate, CHATML};

/// How to serve one model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The public name clients put in `model`.
    pub name: String,
    pub path: PathBuf,
    /// Sequences decoded together.
    pub slots: usize,
    /// Requests that may wait for a slot before new ones get 503.
    pub queue: usize,
    /// Context per request (prompt + completion); capped at the model's training context.
    pub ctx_size: usize,
    pub threads: i32,
    /// KV cells shared by running requests and cached prefixes (default: slots x context).
    pub kv_cells: Option<usize>,
    /// Sequences for cached prefixes beside the slots.
    pub cache_sequences: usize,
    /// Prompt tokens per step while others decode.
    pub step_tokens: usize,
    pub prefix_cache: bool,
    /// Where evicted prefixes are saved; the disk tier gets a directory per model file
    /// inside `spill.dir`.
    pub spill: SpillConfig,
    /// Cached tokens kept in the context while requests run (the rest go to memory).
    pub idle_tokens: usize,
    /// What enforces structured outputs.
    pub grammar_engine: GrammarEngine,
    /// Speculative decoding with drafts from each request's context.
    pub speculative: bool,
}

/// llama.cpp's limit on sequence ids.
const MAX_SEQUENCES: usize = 256;

struct Served {
    name: String,
    model: &'static LlamaModel,
    template: ChatTemplate,
    /// The BOS token's text, when the vocabulary adds one; templates often emit it.
    bos_text: Option<String>,
    max_context: usize,
    engine: SchedulerHandle<SamplerSpec>,
    grammars: Grammars,
    /// The tool-call opener, when the vocabulary has it as one token: never picked under
    /// `tool_choice: none`.
    call_token: Option<Token>,
}

pub struct EmbeddedBackend {
    models: Vec<Arc<Served>>,
    /// Each request's task joining its choices (see `output`).
    tasks: TaskTracker,
}

impl EmbeddedBackend {
    /// Loads every model and starts its engine thread; each engine's metrics go into
    /// `registry` with the model's name as a label.
    pub fn load(configs: &[ModelConfig], show_progress: bool, registry: &mut Registry) -> Result<Self, String> {
        let mut models = Vec::new();
        for c in configs {
            let model = load_model(&c.path, show_progress)?;
            let max_context = c.ctx_size.min(model.n_ctx_train() as usize).max(16);
            let vocab = model.vocab();
            let piece = |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
            let source = match model.meta_val_str("tokenizer.chat_template") {
                Ok(s) => s,
                Err(_) => {
                    warn!(model = %c.name, "the GGUF has no chat template; chat uses ChatML");
                    CHATML.to_owned()
                }
            };
            let template = ChatTemplate::new(&source, piece(vocab.bos()), piece(vocab.eos()))?;
            let bos_text = vocab.should_add_bos().then(|| piece(vocab.bos()));
            let slots = c.slots.clamp(1, MAX_SEQUENCES);
            let kv_cells = c.kv_cells.unwrap_or(slots * max_context);
            if kv_cells < max_context {
                return Err(format!(
                    "{}: the KV cache ({kv_cells} tokens) is smaller than one request's context ({max_context})",
                    c.name
                ));
            }
            let shape = ContextShape {
                kv_cells,
                sequences: (slots + c.cache_sequences).min(MAX_SEQUENCES),
                threads: c.threads.max(1),
            };
            let config = EngineConfig {
                slots,
                queue: c.queue,
                ctx_per_slot: max_context,
                sequences: shape.sequences,
                step_tokens: c.step_tokens,
                prefix_cache: c.prefix_cache,
                spill: SpillConfig { dir: spill_dir(&c.spill, &c.name, &c.path)?, ..c.spill.clone() },
                idle_tokens: c.idle_tokens,
                speculative: c.speculative,
            };
            let metrics = EngineMetrics::default();
            metrics.register(registry.sub_registry_with_label(("model".into(), c.name.clone().into())));
            let engine = SchedulerHandle::spawn(&c.name, config, metrics, move || LlamaEngineModel::new(model, shape))
                .map_err(|e| format!("{}: {e}", c.name))?;
            let grammars = Grammars::new(model, c.grammar_engine).map_err(|e| format!("{}: {e}", c.name))?;
            let call_token = match vocab.tokenize(CALL_OPEN.as_bytes(), false, true).as_slice() {
                [one] => Some(one.0),
                _ => None,
            };
            info!(model = %c.name, path = %c.path.display(), slots, max_context, kv_cells, sequences = shape.sequences,
                  threads = shape.threads, prefix_cache = c.prefix_cache, speculative = c.speculative, "model ready");
            models.push(Arc::new(Served {
                name: c.name.clone(),
                model,
                template,
                bos_text,
                max_context,
                engine,
                grammars,
                call_token,
            }));
        }
        Ok(EmbeddedBackend { models, tasks: TaskTracker::new() })
    }

    fn get(&self, name: &str) -> Result<Arc<Served>, BackendError> {
        self.models.iter().find(|m| m.name == name).cloned().ok_or_else(|| BackendError::ModelNotFound(name.to_owned()))
    }
}

/// What a request becomes once its prompt is tokenized and checked.
struct Plan {
    prompt: Vec<Token>,
    /// Per choice.
    max_tokens: u32,
    choices: u32,
    constraint: Option<Constraint>,
}

impl Served {
    /// Tokenizes and checks `req`, and compiles its grammar: the CPU-heavy part of
    /// preparing a request, run on the blocking pool.
    fn plan(&self, req: &GenerateRequest) -> Result<Plan, BackendError> {
        let tools = req.output.tools.as_ref();
        let prompt = self.tokenize(&req.prompt, true, true, tools)?;
        if prompt.is_empty() {
            return Err(BackendError::invalid("prompt", "the prompt is empty"));
        }
        let biased: Vec<i64> = req.sampling.logit_bias.iter().map(|&(t, _)| i64::from(t)).collect();
        self.check_token_ids(biased.iter().enumerate(), "logit_bias")?;
        let ctx = self.max_context;
        let wanted = req.max_tokens.map_or(1, |m| m as usize);
        if prompt.len() + wanted > ctx {
            return Err(BackendError::ContextLengthExceeded {
                max_context: ctx as u64,
                requested: (prompt.len() + wanted) as u64,
                prompt: prompt.len() as u64,
                completion: wanted as u64,
            });
        }
        let max_tokens = req.max_tokens.unwrap_or((ctx - prompt.len()) as u32);
        let choices = req.output.choices.max(1);
        if choices as usize > self.engine.capacity() {
            return Err(BackendError::invalid(
                "n",
                format!("this server runs at most {} sequences of `{}` at once", self.engine.capacity(), req.model),
            ));
        }
        let constraint = self.grammars.compile(&req.sampling.format, tools)?;
        Ok(Plan { prompt, max_tokens, choices, constraint })
    }

    fn tokenize(
        &self,
        prompt: &PromptInput,
        add_special: bool,
        add_generation_prompt: bool,
        tools: Option<&Tools>,
    ) -> Result<Vec<Token>, BackendError> {
        let (text, add_special) = match prompt {
            PromptInput::Text(t) => (t.clone(), add_special),
            PromptInput::Chat(messages) => {
                let (messages, declared) = crate::tools::prompt_parts(messages, tools, self.template.native_tools);
                let text = self.template.render(&messages, declared.as_deref(), add_generation_prompt)?;
                // Templates that write the BOS text themselves must not get a second one.
                let has_bos = self.bos_text.as_ref().is_some_and(|b| !b.is_empty() && text.starts_with(b.as_str()));
                (text, !has_bos)
            }
        };
        Ok(self.model.vocab().tokenize(text.as_bytes(), add_special, true).into_iter().map(|t| t.0).collect())
    }

    fn check_token_ids<'a>(
        &self,
        ids: impl Iterator<Item = (usize, &'a i64)>,
        field: &str,
    ) -> Result<(), BackendError> {
        let n_vocab = i64::from(self.model.n_vocab());
        for (i, &id) in ids {
            if !(0..n_vocab).contains(&id) {
                return Err(BackendError::invalid(
                    format!("{field}[{i}]"),
                    format!("token id {id} is outside the vocabulary [0, {n_vocab})"),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    fn models(&self) -> Vec<ModelInfo> {
        self.models
            .iter()
            .map(|m| ModelInfo {
                id: m.name.clone(),
                max_context: m.max_context as u64,
                owned_by: "tensormesh".into(),
                memory: Some(memory(m.model)),
                endpoints: Vec::new(),
            })
            .collect()
    }

    async fn prepare(&self, req: GenerateRequest) -> Result<Prepared, BackendError> {
        let served = self.get(&req.model)?;
        // Rendering and tokenizing a prompt (up to the body limit: megabytes) and compiling
        // a grammar take milliseconds to seconds of CPU: on the blocking pool, not on the
        // runtime threads that serve every other connection.
        let (served, req, plan) = tokio::task::spawn_blocking(move || {
            let plan = served.plan(&req);
            (served, req, plan)
        })
        .await
        .map_err(|e| BackendError::Internal(format!("preparing the request failed: {e}")))?;
        let Plan { prompt, max_tokens, choices, constraint } = plan?;
        let prompt_tokens = prompt.len() as u64;
        let tools = req.output.tools.as_ref();
        let calls = tools.filter(|t| t.choice != ToolChoice::None);
        let banned: Vec<Token> = match (tools, served.call_token) {
            (Some(t), Some(token)) if t.choice == ToolChoice::None => vec![token],
            _ => Vec::new(),
        };
        let sequences: Vec<SeqRequest<SamplerSpec>> = (0..choices)
            .map(|choice| SeqRequest {
                prompt: prompt.clone(),
                sampler: SamplerSpec {
                    params: SamplingParams { seed: req.sampling.seed.wrapping_add(choice), ..req.sampling.clone() },
                    constraint: constraint.as_ref().map(|c| c.fork()),
                    banned: banned.clone(),
                },
                max_tokens,
                stop: req.stop.clone(),
                // A constraint decides where output ends (it may allow nothing but the end).
                ignore_eos: req.sampling.ignore_eos && constraint.is_none(),
                choice,
                logprobs: req.output.logprobs,
                // One choice computes the prompt's; the client gets them with each.
                prompt_logprobs: req.output.prompt_logprobs && choice == 0,
                // A client that sets a seed asks for the same text each time it asks.
                speculate: !req.sampling.seeded,
            })
            .collect();
        let (engine, tasks) = (served.engine.clone(), self.tasks.clone());
        let calls = match calls {
            None => Calls::None,
            Some(t) if t.choice == ToolChoice::Auto && req.sampling.format == OutputFormat::Text => Calls::TaggedOrBare,
            Some(_) => Calls::Tagged,
        };
        let max_completion = u64::from(max_tokens) * u64::from(choices);
        Ok(Prepared::new(req.model, prompt_tokens, max_completion, async move {
            let submitted = engine.submit(sequences)?;
            Ok(crate::output::join(&tasks, submitted, prompt_tokens, calls))
        }))
    }

    async fn tokenize(&self, req: TokenizeInput) -> Result<Tokenized, BackendError> {
        let served = self.get(&req.model)?;
        // As in `prepare`: a long prompt's tokens are counted on the blocking pool.
        tokio::task::spawn_blocking(move || {
            let tokens = served.tokenize(&req.prompt, req.add_special, req.add_generation_prompt, None)?;
            let vocab = served.model.vocab();
            let token_strs = tokens
                .iter()
                .map(|&t| String::from_utf8_lossy(&vocab.token_to_piece(LlamaToken(t), true, None)).into_owned())
                .collect();
            Ok(Tokenized {
                tokens: tokens.into_iter().map(i64::from).collect(),
                token_strs,
                max_context: served.max_context as u64,
            })
        })
        .await
        .map_err(|e| BackendError::Internal(format!("tokenizing failed: {e}")))?
    }

    async fn detokenize(&self, model: &str, tokens: &[i64]) -> Result<String, BackendError> {
        let served = self.get(model)?;
        served.check_token_ids(tokens.iter().enumerate(), "tokens")?;
        if tokens.is_empty() {
            return Ok(String::new());
        }
        let ids: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t as i32)).collect();
        // Leading BOS / trailing EOS are dropped so that tokenize -> detokenize round-trips.
        let bytes = served.model.vocab().detokenize(&ids, true, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn healthy(&self) -> bool {
        true
    }

    fn in_flight(&self) -> usize {
        self.models.iter().map(|m| m.engine.in_flight()).sum()
    }

    async fn shutdown(&self) {
        for m in &self.models {
            m.engine.shutdown().await;
        }
        // The engines cancelled what still ran: each request's task now settles it.
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The disk tier's directory for one model file: `<dir>/<name>-<fingerprint>`, where the
/// fingerprint (size and the first MiB of the file, hashed) keeps snapshots of one model
/// from ever loading into another.
fn spill_dir(spill: &SpillConfig, name: &str, path: &std::path::Path) -> Result<Option<PathBuf>, String> {
    let Some(dir) = spill.dir.as_ref().filter(|_| spill.disk_bytes > 0) else { return Ok(None) };
    let read = || -> std::io::Result<String> {
        use sha2::Digest;
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut head = Vec::with_capacity(1 << 20);
        file.by_ref().take(1 << 20).read_to_end(&mut head)?;
        let mut h = sha2::Sha256::new();
        h.update(file.metadata()?.len().to_le_bytes());
        h.update(&head);
        Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
    };
    let fingerprint = read().map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    Ok(Some(dir.join(format!("{safe}-{fingerprint}"))))
}

/// Weights as loaded, and an f16 KV cache (keys and values, every layer, the KV heads'
/// share of the embedding) per token: an estimate where a model's head size differs from
/// `n_embd / n_head`.
fn memory(model: &LlamaModel) -> ModelMemory {
    let heads = u64::from(model.n_head().max(1));
    let kv_width = u64::try_from(model.n_embd()).unwrap_or(0) / heads * u64::from(model.n_head_kv());
    ModelMemory { weights_bytes: model.size(), kv_bytes_per_token: 2 * u64::from(model.n_layer()) * kv_width * 2 }
}
