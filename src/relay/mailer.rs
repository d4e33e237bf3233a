//! Sends login codes, and messages on the email channel, by SMTP (lettre).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::{SmtpConfig, SmtpSecurity};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SMTP settings for {host}: {source}")]
    Setup {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("sending through {host}:{port}: {source}")]
    Send {
        host: String,
        port: u16,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

impl MailError {
    /// Whether trying again cannot help: the address or message is refused (SMTP 5xx).
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::Address { .. } | MailError::Build(_) => true,
            MailError::Send { source, .. } => source.is_permanent(),
            MailError::Setup { .. } => false,
        }
    }
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
    host: String,
    port: u16,
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, MailError> {
        let setup = |source| MailError::Setup {
            host: cfg.host.clone(),
            source,
        };
        let builder = match cfg.security {
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host).map_err(setup)?
            }
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host).map_err(setup)?
            }
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            }
        };
        let mut builder = builder
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(15)));
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from: cfg.from.clone(),
            host: cfg.host.clone(),
            port: cfg.port,
        })
    }

    /// Mails a chat message sent on the email channel, as plain text. `message_id` rides in
    /// a header so replies can be matched to it.
    pub async fn send_text(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        message_id: &str,
    ) -> Result<(), MailError> {
        let message = self
            .builder(to)?
            .subject(subject)
            .message_id(Some(format!("<{message_id}@gts-webchat>")))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())?;
        self.deliver(message).await
    }

    /// Mails a login code. The code is in the body only; it is never logged.
    pub async fn send_code(
        &self,
        to: &str,
        display_name: &str,
        code: &str,
    ) -> Result<(), MailError> {
        let greeting = if display_name.trim().is_empty() {
            "Hello,".to_string()
        } else {
            format!("Hello {},", display_name.trim())
        };
        let message = self
            .builder(to)?
            .subject(format!("Your gts-webchat login code: {code}"))
            .header(ContentType::TEXT_PLAIN)
            .body(format!(
                "{greeting}\n\nyour login code is {code}\n\nIt works once and expires in 10 minutes. \
                 If you did not ask for it, ignore this mail.\n"
            ))?;
        self.deliver(message).await
    }

    /// A message from the relay's sender to `to`.
    fn builder(&self, to: &str) -> Result<lettre::message::MessageBuilder, MailError> {
        let parse = |a: &str| {
            a.parse().map_err(|source| MailError::Address {
                address: a.to_string(),
                source,
            })
        };
        Ok(lettre::Message::builder()
            .from(parse(&self.from)?)
            .to(parse(to)?))
    }

    async fn deliver(&self, message: lettre::Message) -> Result<(), MailError> {
        self.transport
            .send(message)
            .await
            .map_err(|source| MailError::Send {
                host: self.host.clone(),
                port: self.port,
                source,
            })?;
        Ok(())
    }
}
