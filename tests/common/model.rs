//! A local model server for the host tests: the one part of the outside world a test cannot
//! run for real (a model's API). It speaks the four APIs the host CLIs use (OpenAI Responses
//! and Chat Completions, Anthropic Messages, Gemini), streaming or not, on 127.0.0.1. Each
//! answer is deterministic: `answer to <text>`, where <text> is the newest message fenced in
//! the prompt (or `ok` when a request carries no fence: titles, classifiers). Every request is
//! recorded, and the server can be told to fail requests whose prompt holds a marker.
//!
//! When a request offers gts-webchat's MCP tools (Anthropic Messages and OpenAI Responses),
//! the model uses them as a model would: `read_inbox`, then `send_message` answering the
//! newest message it read, then a last line of text (see `tool_step`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelApi {
    Responses,
    Chat,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub api: ModelApi,
    pub path: String,
    pub body: Value,
    /// Every string in the body, in order, joined by newlines.
    pub text: String,
    /// What the server answered (or the error it gave).
    pub answered: String,
}

impl Recorded {
    /// The newest prompt's fenced message text, if the request had one.
    pub fn newest_message(&self) -> Option<String> {
        newest_fenced_text(&self.text)
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    fail: Option<(String, u16)>,
}

#[derive(Clone)]
pub struct ModelServer {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The text of the last fenced message in the newest prompt (see src/hosts/prompt.rs): the
/// delimiter is the one that prompt declares, as a model reading it would take it, so fences
/// forged inside a message are just text.
pub fn newest_fenced_text(all: &str) -> Option<String> {
    const DECLARED: &str = "Everything between a line `<<<";
    let decl = all.rfind(DECLARED)?;
    let delim = all[decl + DECLARED.len()..].split('`').next()?;
    let open_fence = format!("<<<{delim}\n");
    let open = all.rfind(&open_fence)?;
    let body = &all[open + open_fence.len()..];
    let end = body.find(&format!(">>>{delim}"))?;
    let text = body[..end].split_once("text:\n")?.1;
    // Attachment lines follow the text; the prompt's messages in tests carry none.
    Some(text.trim_end_matches('\n').to_string())
}

/// What the model does next when it has our MCP tools.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Call {
        namespace: Option<String>,
        name: String,
        args: Value,
    },
    Say(String),
}

/// Every tool a request offers: (the namespace holding it, if any, its name).
fn tool_names(body: &Value) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for t in body["tools"].as_array().into_iter().flatten() {
        let Some(name) = t["name"].as_str() else {
            continue;
        };
        match t["tools"].as_array() {
            // OpenAI Responses "namespace" tools (how Codex offers an MCP server's tools).
            Some(inner) => {
                out.extend(inner.iter().filter_map(|i| {
                    Some((Some(name.to_string()), i["name"].as_str()?.to_string()))
                }))
            }
            None => out.push((None, name.to_string())),
        }
    }
    out
}

/// The tool call the conversation so far ends with the result of: (its name, the result).
fn last_tool_result(api: ModelApi, body: &Value) -> Option<(String, String)> {
    let mut texts = Vec::new();
    let (id, calls): (String, Vec<&Value>) = match api {
        ModelApi::Anthropic => {
            let msgs = body["messages"].as_array()?;
            let result = msgs
                .last()?
                .get("content")?
                .as_array()?
                .iter()
                .find(|c| c["type"] == "tool_result")?;
            strings(&result["content"], &mut texts);
            let calls = msgs
                .iter()
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .filter(|c| c["type"] == "tool_use")
                .collect();
            (result["tool_use_id"].as_str()?.to_string(), calls)
        }
        ModelApi::Responses => {
            let input = body["input"].as_array()?;
            let last = input.last()?;
            if last["type"] != "function_call_output" {
                return None;
            }
            strings(&last["output"], &mut texts);
            let calls = input
                .iter()
                .filter(|i| i["type"] == "function_call")
                .collect();
            (last["call_id"].as_str()?.to_string(), calls)
        }
        _ => return None,
    };
    let name = calls
        .iter()
        .find(|c| c["id"] == id.as_str() || c["call_id"] == id.as_str())
        .and_then(|c| c["name"].as_str())
        .unwrap_or_default()
        .to_string();
    Some((name, texts.join("\n")))
}

/// Our tool's full name: offered with its schema, or (Claude Code's deferred tools) only
/// named in the prompt until ToolSearch loads it.
fn our_tool(
    names: &[(Option<String>, String)],
    text: &str,
    tool: &str,
) -> Option<(Option<String>, String)> {
    if let Some(n) = names.iter().find(|n| n.1.ends_with(tool)) {
        return Some(n.clone());
    }
    let at = text.find(&format!("__{tool}"))?;
    let start = text[..at].rfind("mcp__")?;
    Some((None, text[start..at + 2 + tool.len()].to_string()))
}

/// With our tools on offer: load them when they are deferred (ToolSearch), read the inbox,
/// answer the newest message read, then say what was done. None when the request has no
/// read_inbox tool.
fn tool_step(api: ModelApi, body: &Value, text: &str) -> Option<Step> {
    let names = tool_names(body);
    let read = our_tool(&names, text, "read_inbox")?;
    let send = our_tool(&names, text, "send_message")?;
    let deferred = !names.iter().any(|n| n.1 == read.1);
    let last = last_tool_result(api, body);
    let call = |tool: (Option<String>, String), args: Value| Step::Call {
        namespace: tool.0,
        name: tool.1,
        args,
    };
    let (name, result) = match last {
        None if deferred && names.iter().any(|n| n.1 == "ToolSearch") => {
            let query = format!("select:{},{}", read.1, send.1);
            return Some(call((None, "ToolSearch".into()), json!({"query": query})));
        }
        None => return Some(call(read, json!({}))),
        Some(r) => r,
    };
    if name == "ToolSearch" {
        return Some(call(read, json!({})));
    }
    if name.ends_with("read_inbox") && result.contains("chat message(s) for") {
        let text = newest_fenced_text(&result)?;
        let id = result
            .rsplit("[message ")
            .next()
            .and_then(|r| r.split([']', ' ']).next())?;
        let from = result
            .rsplit("] From ")
            .next()
            .and_then(|r| r.split(' ').next())?;
        return Some(call(
            send,
            json!({"to": from, "text": format!("answer to {text}"), "reply_to": id}),
        ));
    }
    let said = result
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or("nothing to answer");
    Some(Step::Say(format!("done: {said}")))
}

fn sse(events: Vec<(Option<&str>, Value)>, done: bool) -> Response {
    let mut body = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            body.push_str(&format!("event: {n}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn responses(answer: &str, stream: bool) -> Response {
    let item = json!({"type":"message","id":"msg_1","role":"assistant","status":"completed",
        "content":[{"type":"output_text","text":answer,"annotations":[]}]});
    let usage = json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":0},
        "output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":15});
    if !stream {
        return axum::Json(
            json!({"id":"resp_1","object":"response","status":"completed",
            "output":[item],"usage":usage}),
        )
        .into_response();
    }
    sse(
        vec![
            (
                Some("response.created"),
                json!({"type":"response.created","response":{"id":"resp_1"}}),
            ),
            (
                Some("response.output_item.added"),
                json!({"type":"response.output_item.added","output_index":0,
                "item":{"type":"message","id":"msg_1","role":"assistant","status":"in_progress","content":[]}}),
            ),
            (
                Some("response.output_text.delta"),
                json!({"type":"response.output_text.delta","item_id":"msg_1",
                "output_index":0,"content_index":0,"delta":answer}),
            ),
            (
                Some("response.output_item.done"),
                json!({"type":"response.output_item.done","output_index":0,"item":item}),
            ),
            (
                Some("response.completed"),
                json!({"type":"response.completed","response":{"id":"resp_1","usage":usage}}),
            ),
        ],
        false,
    )
}

fn responses_call(
    namespace: Option<&str>,
    name: &str,
    args: &str,
    n: usize,
    stream: bool,
) -> Response {
    let (id, call) = (format!("fc_{n}"), format!("call_{n}"));
    let mut item = json!({"type":"function_call","id":id,"call_id":call,"name":name,
        "arguments":args,"status":"completed"});
    if let Some(ns) = namespace {
        item["namespace"] = json!(ns);
    }
    let usage = json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":0},
        "output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":15});
    if !stream {
        return axum::Json(
            json!({"id":format!("resp_{n}"),"object":"response","status":"completed",
            "output":[item],"usage":usage}),
        )
        .into_response();
    }
    let mut started = item.clone();
    started["arguments"] = json!("");
    started["status"] = json!("in_progress");
    sse(
        vec![
            (
                Some("response.created"),
                json!({"type":"response.created","response":{"id":format!("resp_{n}")}}),
            ),
            (
                Some("response.output_item.added"),
                json!({"type":"response.output_item.added","output_index":0,"item":started}),
            ),
            (
                Some("response.function_call_arguments.delta"),
                json!({"type":"response.function_call_arguments.delta","item_id":id,
                "output_index":0,"delta":args}),
            ),
            (
                Some("response.function_call_arguments.done"),
                json!({"type":"response.function_call_arguments.done","item_id":id,
                "output_index":0,"arguments":args}),
            ),
            (
                Some("response.output_item.done"),
                json!({"type":"response.output_item.done","output_index":0,"item":item}),
            ),
            (
                Some("response.completed"),
                json!({"type":"response.completed","response":{"id":format!("resp_{n}"),"usage":usage}}),
            ),
        ],
        false,
    )
}

fn anthropic_call(name: &str, args: &Value, n: usize, model: &str, stream: bool) -> Response {
    let id = format!("toolu_{n}");
    let msg = json!({"id":format!("msg_{n}"),"type":"message","role":"assistant","model":model,
        "content":[],"stop_reason":null,"stop_sequence":null,
        "usage":{"input_tokens":10,"output_tokens":1}});
    if !stream {
        let mut full = msg.clone();
        full["content"] = json!([{"type":"tool_use","id":id,"name":name,"input":args}]);
        full["stop_reason"] = json!("tool_use");
        return axum::Json(full).into_response();
    }
    sse(
        vec![
            (
                Some("message_start"),
                json!({"type":"message_start","message":msg}),
            ),
            (
                Some("content_block_start"),
                json!({"type":"content_block_start","index":0,
                "content_block":{"type":"tool_use","id":id,"name":name,"input":{}}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type":"content_block_delta","index":0,
                "delta":{"type":"input_json_delta","partial_json":args.to_string()}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type":"content_block_stop","index":0}),
            ),
            (
                Some("message_delta"),
                json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":5}}),
            ),
            (Some("message_stop"), json!({"type":"message_stop"})),
        ],
        false,
    )
}

fn chat(answer: &str, model: &str, stream: bool) -> Response {
    let usage = json!({"prompt_tokens":10,"completion_tokens":5,"total_tokens":15});
    if !stream {
        return axum::Json(json!({"id":"c1","object":"chat.completion","created":1,"model":model,
            "choices":[{"index":0,"message":{"role":"assistant","content":answer},"finish_reason":"stop"}],
            "usage":usage}))
        .into_response();
    }
    let base = |choices: Value| json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":model,"choices":choices});
    let mut last = base(json!([{"index":0,"delta":{},"finish_reason":"stop"}]));
    last["usage"] = usage;
    sse(
        vec![
            (
                None,
                base(
                    json!([{"index":0,"delta":{"role":"assistant","content":answer},"finish_reason":null}]),
                ),
            ),
            (None, last),
        ],
        true,
    )
}

fn anthropic(answer: &str, model: &str, stream: bool) -> Response {
    let msg = json!({"id":"msg_1","type":"message","role":"assistant","model":model,"content":[],
        "stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}});
    if !stream {
        let mut full = msg.clone();
        full["content"] = json!([{"type":"text","text":answer}]);
        full["stop_reason"] = json!("end_turn");
        return axum::Json(full).into_response();
    }
    sse(
        vec![
            (
                Some("message_start"),
                json!({"type":"message_start","message":msg}),
            ),
            (
                Some("content_block_start"),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":answer}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type":"content_block_stop","index":0}),
            ),
            (
                Some("message_delta"),
                json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}),
            ),
            (Some("message_stop"), json!({"type":"message_stop"})),
        ],
        false,
    )
}

fn gemini(answer: &str, stream: bool) -> Response {
    let resp = json!({"candidates":[{"content":{"parts":[{"text":answer}],"role":"model"},
        "finishReason":"STOP","index":0}],
        "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"totalTokenCount":15},
        "modelVersion":"gemini-test"});
    if stream {
        sse(vec![(None, resp)], false)
    } else {
        axum::Json(resp).into_response()
    }
}

/// An error in the shape each API uses; 4xx so no host retries it.
fn failure(api: ModelApi, status: u16, message: &str) -> Response {
    let body = match api {
        ModelApi::Anthropic => {
            json!({"type":"error","error":{"type":"invalid_request_error","message":message}})
        }
        ModelApi::Gemini => {
            json!({"error":{"code":status,"message":message,"status":"INVALID_ARGUMENT"}})
        }
        _ => json!({"error":{"message":message,"type":"invalid_request_error","code":"refused"}}),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(body),
    )
        .into_response()
}

async fn handle(State(s): State<ModelServer>, uri: Uri, bytes: Bytes) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    if path.ends_with("/models") {
        return axum::Json(json!({"object":"list","data":[{"id":"test-model","object":"model","created":1,"owned_by":"test"}]})).into_response();
    }
    if path.contains("count_tokens") {
        return axum::Json(json!({"input_tokens": 10})).into_response();
    }
    if path.contains(":countTokens") {
        return axum::Json(json!({"totalTokens": 10})).into_response();
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let api = if path.ends_with("/responses") {
        ModelApi::Responses
    } else if path.ends_with("/chat/completions") {
        ModelApi::Chat
    } else if path.ends_with("/messages") {
        ModelApi::Anthropic
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        ModelApi::Gemini
    } else {
        return (StatusCode::NOT_FOUND, format!("no such model API: {path}")).into_response();
    };
    let mut all = Vec::new();
    strings(&body, &mut all);
    let text = all.join("\n");
    let newest = newest_fenced_text(&text);
    let failing = {
        let inner = s.inner.lock().unwrap();
        inner.fail.clone().filter(|(marker, _)| {
            newest
                .as_deref()
                .is_some_and(|n| n.contains(marker.as_str()))
        })
    };
    let step = match api {
        ModelApi::Anthropic | ModelApi::Responses => tool_step(api, &body, &text),
        _ => None,
    };
    let answer = match (&step, &newest) {
        (Some(Step::Say(t)), _) => t.clone(),
        (Some(Step::Call { name, args, .. }), _) => format!("call {name} {args}"),
        (None, Some(t)) => format!("answer to {t}"),
        (None, None) => "ok".to_string(),
    };
    let record = |answered: String| Recorded {
        api,
        path: format!("{path}?{query}"),
        body: body.clone(),
        text: text.clone(),
        answered,
    };
    if let Some((_, status)) = failing {
        let message = "the test model refuses this request (marker found)";
        s.inner
            .lock()
            .unwrap()
            .requests
            .push(record(format!("error {status}: {message}")));
        return failure(api, status, message);
    }
    s.inner
        .lock()
        .unwrap()
        .requests
        .push(record(answer.clone()));
    let stream = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or("test-model").to_string();
    if let Some(Step::Call {
        namespace,
        name,
        args,
    }) = step
    {
        let n = s.inner.lock().unwrap().requests.len();
        return match api {
            ModelApi::Responses => responses_call(
                namespace.as_deref(),
                &name,
                &args.to_string(),
                n,
                stream || body["stream"].is_null(),
            ),
            _ => anthropic_call(&name, &args, n, &model, stream),
        };
    }
    match api {
        ModelApi::Responses => responses(&answer, stream || body["stream"].is_null()),
        ModelApi::Chat => chat(&answer, &model, stream),
        ModelApi::Anthropic => anthropic(&answer, &model, stream),
        ModelApi::Gemini => gemini(&answer, path.contains("stream")),
    }
}

impl ModelServer {
    /// Starts on an ephemeral port, on a runtime of its own (usable from sync tests too).
    pub fn start() -> ModelServer {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("model server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("model server port");
                let url = format!("http://{}", listener.local_addr().unwrap());
                let server = ModelServer {
                    url: url.clone(),
                    inner: shared,
                };
                let app = Router::new().fallback(handle).with_state(server);
                tx.send(url).unwrap();
                let _ = axum::serve(listener, app).await;
            });
        });
        let url = rx.recv().expect("model server started");
        ModelServer { url, inner }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Fails (with `status`) every request whose newest message holds `marker`.
    pub fn fail_when(&self, marker: &str, status: u16) {
        self.inner.lock().unwrap().fail = Some((marker.to_string(), status));
    }

    pub fn stop_failing(&self) {
        self.inner.lock().unwrap().fail = None;
    }
}
