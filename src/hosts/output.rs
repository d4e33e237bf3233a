//! Reading what a host printed: its session id, its final answer (nothing else), and whether it
//! failed, with the host's own words for why. Hosts that exit 0 on a model error (aider) or
//! report errors inside their JSON are failures here too.

use serde_json::Value;

use super::presets::Reader;

/// What one turn produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub session: Option<String>,
    pub answer: Option<String>,
    /// The host's own description of a failure.
    pub error: Option<String>,
    /// Short lines about what the host did (tool calls, commands), for `--publish`.
    pub progress: Vec<String>,
}

fn lines(stdout: &str) -> impl Iterator<Item = Value> + '_ {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty())
}

/// An error object's message: `{message}`, `{error: {message}}` or a string (which may itself
/// be an API's JSON error body, as codex passes it on).
fn error_message(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ Value::Object(_)) => error_message(&inner),
            _ => Some(s.clone()),
        },
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| o.get("error").and_then(error_message))
            .or_else(|| o.get("data").and_then(error_message))
            .or_else(|| Some(v.to_string())),
        _ => None,
    }
}

fn codex(stdout: &str) -> Parsed {
    let mut p = Parsed::default();
    for v in lines(stdout) {
        match v["type"].as_str().unwrap_or_default() {
            "thread.started" => p.session = text(&v, "thread_id"),
            "item.completed" => {
                let item = &v["item"];
                match item["type"].as_str().unwrap_or_default() {
                    "agent_message" => p.answer = text(item, "text"),
                    "command_execution" => {
                        if let Some(c) = text(item, "command") {
                            p.progress.push(format!("ran: {c}"));
                        }
                    }
                    "file_change" => p.progress.push("changed files".into()),
                    "mcp_tool_call" => {
                        if let Some(t) = text(item, "tool") {
                            p.progress.push(format!("tool: {t}"));
                        }
                    }
                    _ => {}
                }
            }
            "turn.failed" => p.error = error_message(&v["error"]).or(Some(v.to_string())),
            "error" => {
                p.error = v
                    .get("message")
                    .and_then(error_message)
                    .or(Some(v.to_string()))
            }
            _ => {}
        }
    }
    p
}

fn result_object(v: &Value, p: &mut Parsed) {
    if let Some(s) = text(v, "session_id") {
        p.session = Some(s);
    }
    let is_error = v["is_error"].as_bool().unwrap_or(false)
        || v["subtype"].as_str().is_some_and(|s| s != "success");
    let result = text(v, "result");
    if is_error {
        p.error = result
            .or_else(|| v.get("error").and_then(error_message))
            .or_else(|| v.get("api_error_status").map(|s| s.to_string()))
            .or(Some(v.to_string()));
    } else {
        p.answer = result;
    }
}

fn result_json(stdout: &str) -> Parsed {
    let mut p = Parsed::default();
    // The last JSON object printed is the result (a host may print a warning line first).
    if let Some(v) = lines(stdout).filter(Value::is_object).last() {
        result_object(&v, &mut p);
    }
    p
}

fn qwen(stdout: &str) -> Parsed {
    let mut p = Parsed::default();
    for v in lines(stdout) {
        match v["type"].as_str().unwrap_or_default() {
            "system" => p.session = text(&v, "session_id").or(p.session.take()),
            "result" => result_object(&v, &mut p),
            "assistant" => {
                for c in v["message"]["content"].as_array().into_iter().flatten() {
                    if c["type"] == "tool_use"
                        && let Some(n) = text(c, "name")
                    {
                        p.progress.push(format!("tool: {n}"));
                    }
                }
            }
            _ => {}
        }
    }
    p
}

fn gemini(stdout: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut answer = String::new();
    let mut status = None;
    for v in lines(stdout) {
        match v["type"].as_str().unwrap_or_default() {
            "init" => p.session = text(&v, "session_id"),
            "message" if v["role"] == "assistant" => {
                if let Some(c) = v["content"].as_str() {
                    answer.push_str(c);
                }
            }
            "tool_use" => {
                if let Some(n) = text(&v, "tool_name") {
                    p.progress.push(format!("tool: {n}"));
                }
            }
            "error" => p.error = error_message(&v).or(Some(v.to_string())),
            "result" => {
                status = v["status"].as_str().map(str::to_string);
                if status.as_deref() != Some("success") {
                    p.error = p
                        .error
                        .take()
                        .or_else(|| v.get("error").and_then(error_message))
                        .or(Some(v.to_string()));
                }
            }
            _ => {}
        }
    }
    if status.as_deref() == Some("success") && !answer.trim().is_empty() {
        p.answer = Some(answer);
    }
    p
}

fn opencode(stdout: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut answer = String::new();
    for v in lines(stdout) {
        if let Some(s) = text(&v, "sessionID") {
            p.session = Some(s);
        }
        match v["type"].as_str().unwrap_or_default() {
            "text" => {
                if let Some(t) = v["part"]["text"].as_str() {
                    answer.push_str(t);
                }
            }
            "tool_use" => {
                if let Some(t) = v["part"]["tool"].as_str() {
                    p.progress.push(format!("tool: {t}"));
                }
            }
            "error" => p.error = error_message(&v["error"]).or(Some(v.to_string())),
            _ => {}
        }
    }
    if !answer.trim().is_empty() {
        p.answer = Some(answer);
    }
    p
}

fn copilot(stdout: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut failed = None;
    for v in lines(stdout) {
        let data = &v["data"];
        match v["type"].as_str().unwrap_or_default() {
            "assistant.message" => {
                if let Some(c) = text(data, "content") {
                    p.answer = Some(c);
                }
                for t in data["toolRequests"].as_array().into_iter().flatten() {
                    if let Some(n) = text(t, "name") {
                        p.progress.push(format!("tool: {n}"));
                    }
                }
            }
            "model.call_final_result" if data["result"] != "success" => {
                failed = Some(data.to_string());
            }
            "session.error" | "error" => failed = error_message(data).or(Some(v.to_string())),
            "result" => {
                if let Some(s) = text(&v, "sessionId") {
                    p.session = Some(s);
                }
                if v["exitCode"].as_i64().is_some_and(|c| c != 0) {
                    failed = failed.or(Some(format!("exit code {}", v["exitCode"])));
                }
            }
            _ => {}
        }
    }
    if let Some(e) = failed {
        p.error = Some(e);
        p.answer = None;
    }
    p
}

/// The reply in aider's chat history: what follows the last user block (`#### ` lines), up to
/// aider's own trailing notices (`> ` lines).
fn aider(history: &str) -> Parsed {
    let mut p = Parsed::default();
    let all: Vec<&str> = history.lines().collect();
    let Some(last_user) = all.iter().rposition(|l| l.starts_with("#### ")) else {
        p.error = Some("aider recorded no turn in its chat history".into());
        return p;
    };
    let mut after: Vec<&str> = all[last_user + 1..].to_vec();
    let mut notices = Vec::new();
    while after
        .last()
        .is_some_and(|l| l.starts_with("> ") || l.trim().is_empty())
    {
        if let Some(l) = after.pop()
            && let Some(n) = l.strip_prefix("> ")
        {
            notices.push(n.trim().to_string());
        }
    }
    notices.reverse();
    let answer = after.join("\n").trim().to_string();
    if answer.is_empty() {
        let why: Vec<String> = notices
            .into_iter()
            .filter(|n| !n.starts_with("Tokens:"))
            .collect();
        p.error = Some(if why.is_empty() {
            "aider printed no answer".into()
        } else {
            why.join(" | ")
        });
    } else {
        p.answer = Some(answer);
    }
    p
}

/// Reads one turn's output. `aider_history` is the chat history written during the turn.
pub fn parse(reader: Reader, stdout: &str, aider_history: Option<&str>) -> Parsed {
    match reader {
        Reader::CodexJsonl => codex(stdout),
        Reader::ResultJson => result_json(stdout),
        Reader::QwenJsonl => qwen(stdout),
        Reader::GeminiJsonl => gemini(stdout),
        Reader::OpencodeJsonl => opencode(stdout),
        Reader::CopilotJsonl => copilot(stdout),
        Reader::AiderHistory => aider(aider_history.unwrap_or_default()),
        Reader::Text => Parsed {
            answer: Some(stdout.trim().to_string()).filter(|s| !s.is_empty()),
            ..Parsed::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_answer_session_and_failure() {
        let ok = r#"{"type":"thread.started","thread_id":"t-1"}
{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata not found"}}
{"type":"item.completed","item":{"id":"i1","type":"command_execution","command":"ls"}}
{"type":"item.completed","item":{"id":"i2","type":"agent_message","text":"the answer"}}
{"type":"turn.completed","usage":{}}"#;
        let p = parse(Reader::CodexJsonl, ok, None);
        assert_eq!(p.session.as_deref(), Some("t-1"));
        assert_eq!(p.answer.as_deref(), Some("the answer"));
        assert_eq!(p.error, None, "an error item is only a warning");
        assert_eq!(p.progress, ["ran: ls"]);
        let bad = r#"{"type":"thread.started","thread_id":"t-1"}
{"type":"turn.failed","error":{"message":"unexpected status 400: model refused"}}"#;
        let p = parse(Reader::CodexJsonl, bad, None);
        assert_eq!(
            p.error.as_deref(),
            Some("unexpected status 400: model refused")
        );
    }

    #[test]
    fn result_json_errors_are_failures() {
        let p = parse(
            Reader::ResultJson,
            r#"{"type":"result","is_error":true,"result":"API Error: 400 refused","session_id":"s"}"#,
            None,
        );
        assert_eq!(p.error.as_deref(), Some("API Error: 400 refused"));
        assert_eq!(p.answer, None);
    }

    #[test]
    fn qwen_error_object() {
        let out = r#"{"type":"system","session_id":"q1"}
{"type":"result","subtype":"error_during_execution","is_error":true,"error":{"message":"[API Error: 400 refused]"},"session_id":"q1"}"#;
        let p = parse(Reader::QwenJsonl, out, None);
        assert_eq!(p.error.as_deref(), Some("[API Error: 400 refused]"));
    }

    #[test]
    fn aider_reply_from_history() {
        let h = "# aider chat started\n\n#### line one  \n#### line two  \n\nThe reply\n> quoted in reply\nmore\n\n> Tokens: 10 sent, 5 received.  \n";
        let p = parse(Reader::AiderHistory, "", Some(h));
        assert_eq!(
            p.answer.as_deref(),
            Some("The reply\n> quoted in reply\nmore")
        );
        let failed = "#### hi  \n\n> litellm.BadRequestError: refused  \n";
        let p = parse(Reader::AiderHistory, "", Some(failed));
        assert_eq!(p.error.as_deref(), Some("litellm.BadRequestError: refused"));
    }

    #[test]
    fn gemini_needs_success() {
        let out = r#"{"type":"init","session_id":"g1"}
{"type":"message","role":"assistant","content":"par","delta":true}
{"type":"message","role":"assistant","content":"tial","delta":true}
{"type":"result","status":"error","error":{"message":"quota"}}"#;
        let p = parse(Reader::GeminiJsonl, out, None);
        assert_eq!(p.answer, None);
        assert_eq!(p.error.as_deref(), Some("quota"));
    }
}
