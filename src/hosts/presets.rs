//! Every AI host the daemon can wake, as data: how one non-interactive turn is started and how
//! it is continued by session id (never "the newest session"), how the prompt goes in, and how
//! the session id, the final answer and a failure are read from what the host prints. A new
//! host is a new row (and a test against its real CLI). Facts: ../shared/HOSTS.md, and each
//! row's `verified` says whether it was driven here against a local model server.

/// Where the prompt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptIn {
    /// On stdin (no argument-size limit, nothing for flags to swallow).
    Stdin,
    /// In a file whose path replaces `{prompt_file}` in the arguments.
    File,
}

/// How the host's output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `codex exec --json`: JSONL; `thread.started` has the id, `item.completed` agent messages
    /// the answer, `turn.failed` / `error` a failure.
    CodexJsonl,
    /// One JSON object (`claude -p --output-format json`, `cursor-agent`): `session_id`,
    /// `result`, `is_error`.
    ResultJson,
    /// `gemini -o stream-json`: JSONL; `init` has the id, assistant `message` parts the answer,
    /// `result.status` and `error` the outcome.
    GeminiJsonl,
    /// `qwen -o stream-json`: JSONL ending in a `result` object like `ResultJson`'s.
    QwenJsonl,
    /// `opencode run --format json`: JSONL with `sessionID`; `text` parts the answer, `error`.
    OpencodeJsonl,
    /// `copilot --output-format json`: JSONL; the last `assistant.message` is the answer, the
    /// `result` event's exit code and `model.call_final_result` the outcome.
    CopilotJsonl,
    /// aider has no answer-only output: the reply is read from `.aider.chat.history.md` in the
    /// working directory, after the last user block.
    AiderHistory,
    /// The whole stdout is the answer.
    Text,
}

#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    /// The program looked up on PATH.
    pub program: &'static str,
    /// How a user installs it.
    pub install: &'static str,
    /// Arguments of a first turn. `{flags}` is where WEBCHAT_RUNNER_FLAGS / extra arguments go,
    /// `{session}` a session id we choose (hosts that take one), `{prompt_file}` the prompt.
    pub first: &'static [&'static str],
    /// Arguments of a continued turn; `{session}` is the id read from the first.
    pub resume: &'static [&'static str],
    pub prompt: PromptIn,
    pub reader: Reader,
    /// Set for the host unless the environment already has them.
    pub env: &'static [(&'static str, &'static str)],
    /// Whether this row was run here against the real CLI and a local model server.
    pub verified: bool,
}

impl Preset {
    /// Whether the host keeps a conversation between turns (a session to continue).
    pub fn has_sessions(&self) -> bool {
        self.resume.contains(&"{session}")
    }

    /// Whether we pick the session id (the first turn's arguments name it).
    pub fn names_its_session(&self) -> bool {
        self.first.contains(&"{session}")
    }
}

/// Sandbox and approvals are the same on every turn: what a first turn sets on the command
/// line, a continued turn sets again (codex refuses `-s` after `resume`, so both use `-c`).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "codex",
        program: "codex",
        install: "npm install -g @openai/codex",
        first: &[
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-c",
            "sandbox_mode=\"workspace-write\"",
            "{flags}",
            "-",
        ],
        resume: &[
            "exec",
            "resume",
            "--json",
            "--skip-git-repo-check",
            "-c",
            "sandbox_mode=\"workspace-write\"",
            "{flags}",
            "{session}",
            "-",
        ],
        prompt: PromptIn::Stdin,
        reader: Reader::CodexJsonl,
        env: &[],
        verified: true,
    },
    Preset {
        name: "claude",
        program: "claude",
        install: "npm install -g @anthropic-ai/claude-code",
        first: &["-p", "--output-format", "json", "{flags}"],
        resume: &[
            "-p",
            "--output-format",
            "json",
            "--resume",
            "{session}",
            "{flags}",
        ],
        prompt: PromptIn::Stdin,
        reader: Reader::ResultJson,
        env: &[],
        verified: true,
    },
    Preset {
        name: "gemini",
        program: "gemini",
        install: "npm install -g @google/gemini-cli",
        first: &["-o", "stream-json", "{flags}"],
        resume: &["-o", "stream-json", "-r", "{session}", "{flags}"],
        prompt: PromptIn::Stdin,
        reader: Reader::GeminiJsonl,
        // Headless in a folder it has not seen: without this it exits 55.
        env: &[("GEMINI_CLI_TRUST_WORKSPACE", "true")],
        verified: true,
    },
    Preset {
        name: "qwen",
        program: "qwen",
        install: "npm install -g @qwen-code/qwen-code",
        first: &["-o", "stream-json", "{flags}"],
        resume: &["-o", "stream-json", "-r", "{session}", "{flags}"],
        prompt: PromptIn::Stdin,
        reader: Reader::QwenJsonl,
        env: &[],
        verified: true,
    },
    Preset {
        name: "opencode",
        program: "opencode",
        install: "npm install -g opencode-ai",
        first: &["run", "--format", "json", "{flags}"],
        resume: &["run", "--format", "json", "-s", "{session}", "{flags}"],
        prompt: PromptIn::Stdin,
        reader: Reader::OpencodeJsonl,
        env: &[],
        verified: true,
    },
    Preset {
        name: "copilot",
        program: "copilot",
        install: "npm install -g @github/copilot",
        first: &[
            "--output-format",
            "json",
            "--disable-client-telemetry",
            "--session-id",
            "{session}",
            "{flags}",
        ],
        resume: &[
            "--output-format",
            "json",
            "--disable-client-telemetry",
            "--resume",
            "{session}",
            "{flags}",
        ],
        prompt: PromptIn::Stdin,
        reader: Reader::CopilotJsonl,
        env: &[("COPILOT_AUTO_UPDATE", "false")],
        verified: true,
    },
    Preset {
        name: "aider",
        program: "aider",
        install: "pipx install aider-chat (or pip install aider-chat in a venv)",
        first: &[
            "--message-file",
            "{prompt_file}",
            "--no-auto-commits",
            "--no-pretty",
            "--no-stream",
            "--no-check-update",
            "--analytics-disable",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "{flags}",
        ],
        resume: &[
            "--restore-chat-history",
            "--message-file",
            "{prompt_file}",
            "--no-auto-commits",
            "--no-pretty",
            "--no-stream",
            "--no-check-update",
            "--analytics-disable",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "{flags}",
        ],
        prompt: PromptIn::File,
        reader: Reader::AiderHistory,
        env: &[],
        verified: true,
    },
    Preset {
        name: "cursor",
        program: "cursor-agent",
        install: "curl https://cursor.com/install -fsS | bash (not in the package registries)",
        first: &["-p", "--output-format", "json", "{flags}"],
        resume: &[
            "-p",
            "--output-format",
            "json",
            "--resume",
            "{session}",
            "{flags}",
        ],
        prompt: PromptIn::Stdin,
        reader: Reader::ResultJson,
        env: &[],
        verified: false,
    },
    Preset {
        name: "goose",
        program: "goose",
        install: "see https://block.github.io/goose (not in the package registries)",
        first: &["run", "-q", "-n", "{session}", "{flags}", "-i", "-"],
        resume: &["run", "-q", "-r", "-n", "{session}", "{flags}", "-i", "-"],
        prompt: PromptIn::Stdin,
        reader: Reader::Text,
        env: &[],
        verified: false,
    },
];

/// Any program that reads the prompt on stdin and prints its answer (`run-host text --program
/// PATH`): no sessions, the whole stdout is the answer.
pub const TEXT: Preset = Preset {
    name: "text",
    program: "",
    install: "give the program with --program PATH",
    first: &["{flags}"],
    resume: &["{flags}"],
    prompt: PromptIn::Stdin,
    reader: Reader::Text,
    env: &[],
    verified: true,
};

pub fn find(name: &str) -> Option<&'static Preset> {
    if name == TEXT.name {
        return Some(&TEXT);
    }
    PRESETS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PRESETS
        .iter()
        .map(|p| p.name)
        .chain(std::iter::once(TEXT.name))
        .collect()
}
