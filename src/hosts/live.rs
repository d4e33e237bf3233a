//! Live-session hooks: what each interactive host expects from `gts-webchat host-hook EVENT`
//! when chat messages wait for the session a person is driving. A turn that ends is continued
//! with them (Claude Code and Codex `Stop`, Gemini CLI `AfterAgent`, Cursor `stop`); a prompt
//! the person submits carries them as extra context (`UserPromptSubmit`, `BeforeAgent`).

use serde_json::{Value, json};

/// The interactive hosts whose hooks can inject chat messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LiveHost {
    Claude,
    Codex,
    Gemini,
    Cursor,
}

impl LiveHost {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveHost::Claude => "claude",
            LiveHost::Codex => "codex",
            LiveHost::Gemini => "gemini",
            LiveHost::Cursor => "cursor",
        }
    }

    /// The host's names for (turn ended, prompt submitted); Cursor's prompt hook cannot add
    /// context, so it has none.
    pub fn events(self) -> (&'static str, Option<&'static str>) {
        match self {
            LiveHost::Claude | LiveHost::Codex => ("Stop", Some("UserPromptSubmit")),
            LiveHost::Gemini => ("AfterAgent", Some("BeforeAgent")),
            LiveHost::Cursor => ("stop", None),
        }
    }
}

/// When the hook fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEvent {
    /// The turn is ending: messages waiting continue it.
    TurnEnd,
    /// The person submitted a prompt: messages waiting go with it as context.
    PromptSubmit,
}

/// The event a host's hook name stands for.
pub fn event_of(host: LiveHost, name: &str) -> Result<LiveEvent, String> {
    let (end, submit) = host.events();
    if name == end {
        Ok(LiveEvent::TurnEnd)
    } else if Some(name) == submit {
        Ok(LiveEvent::PromptSubmit)
    } else {
        Err(format!(
            "{} has no hook event {name:?} that gts-webchat answers; use {}",
            host.as_str(),
            std::iter::once(end)
                .chain(submit)
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    }
}

/// Whether this turn end is already a continuation a hook asked for: then the turn is let
/// end, so a stream of chat messages cannot keep a session going forever. Waiting messages
/// stay for the next prompt.
pub fn already_continued(host: LiveHost, input: &Value) -> bool {
    match host {
        LiveHost::Cursor => input["loop_count"].as_u64().unwrap_or(0) > 0,
        _ => input["stop_hook_active"].as_bool().unwrap_or(false),
    }
}

/// What the host reads from the hook's stdout to carry `text` into the session.
pub fn response(host: LiveHost, event: LiveEvent, text: &str) -> Value {
    match (host, event) {
        (LiveHost::Claude | LiveHost::Codex, LiveEvent::TurnEnd) => {
            json!({"decision": "block", "reason": text})
        }
        (LiveHost::Gemini, LiveEvent::TurnEnd) => json!({"decision": "deny", "reason": text}),
        (LiveHost::Cursor, _) => json!({"followup_message": text}),
        (LiveHost::Claude | LiveHost::Codex, LiveEvent::PromptSubmit) => json!({
            "hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": text}
        }),
        (LiveHost::Gemini, LiveEvent::PromptSubmit) => json!({
            "hookSpecificOutput": {"hookEventName": "BeforeAgent", "additionalContext": text}
        }),
    }
}

/// How the session answers: ours, outside every fence.
pub fn answer_hint(task: &str) -> String {
    format!(
        "\nAnswer each one in the chat, not only here: with the send_message tool of the \
         gts-webchat MCP server if you have it (to: the sender's address, reply_to: the \
         message id), or by running `gts-webchat send --task {task} --to ADDRESS --reply-to \
         MESSAGE_ID --message TEXT`.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_gets_its_own_shape() {
        let t = "hi";
        assert_eq!(
            response(LiveHost::Claude, LiveEvent::TurnEnd, t),
            json!({"decision":"block","reason":"hi"})
        );
        assert_eq!(
            response(LiveHost::Gemini, LiveEvent::TurnEnd, t)["decision"],
            "deny"
        );
        assert_eq!(
            response(LiveHost::Cursor, LiveEvent::TurnEnd, t),
            json!({"followup_message":"hi"})
        );
        assert_eq!(
            response(LiveHost::Codex, LiveEvent::PromptSubmit, t)["hookSpecificOutput"]["additionalContext"],
            "hi"
        );
        assert_eq!(
            event_of(LiveHost::Gemini, "AfterAgent"),
            Ok(LiveEvent::TurnEnd)
        );
        assert!(event_of(LiveHost::Cursor, "beforeSubmitPrompt").is_err());
        assert!(event_of(LiveHost::Claude, "Stop").is_ok());
    }

    #[test]
    fn a_continued_turn_is_let_end() {
        assert!(already_continued(
            LiveHost::Claude,
            &json!({"stop_hook_active": true})
        ));
        assert!(!already_continued(LiveHost::Codex, &json!({})));
        assert!(already_continued(
            LiveHost::Cursor,
            &json!({"loop_count": 1})
        ));
        assert!(!already_continued(
            LiveHost::Cursor,
            &json!({"loop_count": 0})
        ));
    }
}
