//! Language tags: people choose BCP 47 tags ("es", "pt-BR"); detection and Apertium speak
//! ISO 639-3 ("spa", "por"). Two tags name the same language when their primary subtags do.

/// (BCP 47 primary subtag, ISO 639-3) for the languages detection knows.
const CODES: &[(&str, &str)] = &[
    ("en", "eng"),
    ("es", "spa"),
    ("fr", "fra"),
    ("de", "deu"),
    ("it", "ita"),
    ("pt", "por"),
    ("ca", "cat"),
    ("gl", "glg"),
    ("eu", "eus"),
    ("oc", "oci"),
    ("nl", "nld"),
    ("ru", "rus"),
    ("uk", "ukr"),
    ("pl", "pol"),
    ("cs", "ces"),
    ("sk", "slk"),
    ("ro", "ron"),
    ("hu", "hun"),
    ("el", "ell"),
    ("tr", "tur"),
    ("sv", "swe"),
    ("da", "dan"),
    ("nb", "nob"),
    ("fi", "fin"),
    ("et", "est"),
    ("lt", "lit"),
    ("lv", "lav"),
    ("bg", "bul"),
    ("hr", "hrv"),
    ("sr", "srp"),
    ("sl", "slv"),
    ("he", "heb"),
    ("ar", "arb"),
    ("fa", "pes"),
    ("hi", "hin"),
    ("bn", "ben"),
    ("ur", "urd"),
    ("ja", "jpn"),
    ("zh", "cmn"),
    ("ko", "kor"),
    ("vi", "vie"),
    ("th", "tha"),
    ("id", "ind"),
    ("eo", "epo"),
    ("af", "afr"),
];

/// The primary subtag of a tag, lower case ("pt-BR" → "pt").
pub fn primary(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

pub fn same_language(a: &str, b: &str) -> bool {
    let (a, b) = (primary(a), primary(b));
    !a.is_empty() && a == b
}

/// ISO 639-3 for a BCP 47 tag (or the tag itself when it already is one).
pub fn iso3(tag: &str) -> Option<&'static str> {
    let p = primary(tag);
    CODES
        .iter()
        .find(|(two, three)| *two == p || *three == p)
        .map(|(_, three)| *three)
}

/// The BCP 47 primary subtag for an ISO 639-3 code.
pub fn bcp47(iso3: &str) -> Option<&'static str> {
    CODES
        .iter()
        .find(|(_, three)| *three == iso3)
        .map(|(two, _)| *two)
}

/// The language a text is written in, when detection is confident enough.
pub fn detect(text: &str) -> Option<&'static str> {
    let info = whatlang::detect(text)?;
    // Short texts come back unreliable; a fair confidence is still better than guessing the
    // sender's preference wrong, so the threshold is below whatlang's own "reliable".
    if info.confidence() < 0.5 && !info.is_reliable() {
        return None;
    }
    bcp47(info.lang().code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(primary("pt-BR"), "pt");
        assert!(same_language("es", "es-MX"));
        assert!(!same_language("es", "en"));
        assert_eq!(iso3("es"), Some("spa"));
        assert_eq!(iso3("spa"), Some("spa"));
        assert_eq!(bcp47("eng"), Some("en"));
    }

    #[test]
    fn detection() {
        assert_eq!(
            detect("The build is green and every test passed on the second try."),
            Some("en")
        );
        assert_eq!(
            detect("El informe está listo y lo enviaré mañana por la mañana."),
            Some("es")
        );
    }
}
