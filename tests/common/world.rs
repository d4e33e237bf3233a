//! The daemon tests' world: a relay, a human who writes, and the agent persona `agent-1` that
//! a daemon runs as. Test files add their own methods (same crate).

use super::{Api, Relay, Sandbox, gw, ok, persona};

pub struct World {
    pub sb: Sandbox,
    pub relay: Relay,
    pub api: Api,
    /// The human's session token (address `human-1`).
    pub human: String,
}

impl World {
    pub async fn new() -> World {
        let sb = Sandbox::new();
        let relay = Relay::start(&sb);
        let api = relay.api();
        let human = api.login("human@example.com", "human-1", "human").await;
        let w = World {
            sb,
            relay,
            api,
            human,
        };
        w.persona("agent@example.com", "agent-1");
        w
    }

    pub fn persona(&self, email: &str, address: &str) {
        persona(&self.sb, &self.relay.url, email, address);
    }

    /// The human writes to `to`; the message id.
    pub async fn tell(&self, to: &str, text: &str) -> String {
        self.api.send(&self.human, "human-1", to, text).await
    }

    pub fn stop(&self, task: &str) {
        ok(&gw(&self.sb, &["daemon", "stop", "--task", task]));
    }
}
