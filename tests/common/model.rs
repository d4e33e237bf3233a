//! A local model server for the host tests: the one part of the outside world a test cannot
//! run for real (a model's API). It speaks the four APIs the host CLIs use (OpenAI Responses
//! and Chat Completions, Anthropic Messages, Gemini), streaming or not, on 127.0.0.1. Each
//! answer is deterministic: `answer to <text>`, where <text> is the newest message fenced in
//! the prompt (or `ok` when a request carries no fence: titles, classifiers). Every request is
//! recorded, and the server can be told to fail requests whose prompt holds a marker.

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
    let answer = match &newest {
        Some(t) => format!("answer to {t}"),
        None => "ok".to_string(),
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
