//! An email address as the contract defines it: a bare `local@domain`, trimmed, at most 254
//! characters, unique after Unicode NFKC, case folding and IDNA of the domain.
//!
//! Two forms come out of [`Email::parse`]:
//! - [`Email::as_str`], the address as stored and shown: trimmed and in NFC, so one spelling is
//!   stored one way whatever the client's keyboard composed;
//! - [`Email::normalized`], the uniqueness key (`users.email_normalized`, the mail throttle, the
//!   rate limits, `one_time_tokens.email`): the local part in NFKC, lowercased, NFKC again; the
//!   domain through UTS #46 (IDNA) to its ASCII (punycode) form. Fullwidth letters, decomposed
//!   accents, upper case and a Unicode domain against its punycode are then one account.
//!
//! Why so strict: an address is shown to people (in emails, in admin lists) and is a key. A
//! display name (`Support Team <victim@example.com>`), a comment, a control or an invisible
//! character lets one string look like another account or carry text into an email; none of
//! them is needed to receive mail. Changing the key is a migration: see `store::email_keys`.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

const INVALID: &str = "is not a valid email address";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    as_given: String,
    normalized: String,
}

impl Email {
    /// The version of the rules that compute [`Email::normalized`]. Stored keys made by an
    /// older version are re-keyed at start (see `store::email_keys`); bump it when the key
    /// changes.
    pub const KEY_VERSION: i64 = 2;

    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        // Checked on the input and on its NFKC form: NFKC turns a fullwidth `＜` into `<` and a
        // no-break space into a space, which must not slip through into the key.
        let compat: String = trimmed.nfkc().collect();
        if let Some(problem) = trimmed
            .chars()
            .chain(compat.chars())
            .filter_map(refusal)
            .min()
        {
            return Err(problem.message());
        }
        let display: String = trimmed.nfc().collect();
        if display.chars().count() > 254 {
            return Err("must be at most 254 characters");
        }
        // Exactly one real `@`, before and after NFKC: a fullwidth `＠` is not a separator that
        // mail systems know, and must not become one in the key.
        let (local, domain) = display.split_once('@').ok_or(INVALID)?;
        if local.is_empty() || domain.contains('@') || compat.matches('@').count() != 1 {
            return Err(INVALID);
        }
        let normalized = format!("{}@{}", local_key(local), domain_key(domain)?);
        if !email_address::EmailAddress::is_valid(&normalized) {
            return Err(INVALID);
        }
        Ok(Email {
            as_given: display,
            normalized,
        })
    }

    /// The address as stored and displayed: trimmed, NFC.
    pub fn as_str(&self) -> &str {
        &self.as_given
    }

    /// The form uniqueness is decided on (see the module documentation).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The part before the `@` of the key, for the easily-guessed-password check.
    pub fn local_part(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map_or("", |(local, _)| local)
    }
}

/// NFKC, lowercase, NFKC again: lowercasing can leave a string that is not NFKC (a few
/// characters lowercase to a decomposed sequence). `to_lowercase` stands in for full case
/// folding; the two differ on a handful of letters (`ß`, final sigma), which stay distinct.
fn local_key(local: &str) -> String {
    local
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .nfkc()
        .collect()
}

/// UTS #46 to ASCII with the strict DNS rules (letters, digits and hyphens only, no leading or
/// trailing hyphen, label and name lengths checked): it maps case and compatibility forms
/// itself, and refuses what no mail domain can be. The house rules on top: a dot inside, no
/// address literal (`[…]` is refused by the deny list already), no trailing dot.
fn domain_key(domain: &str) -> Result<String, &'static str> {
    use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .map_err(|_| INVALID)?;
    if !ascii.contains('.') || ascii.ends_with('.') {
        return Err(INVALID);
    }
    Ok(ascii.into_owned())
}

/// Why a character is refused, most specific first: the first variant found wins, so
/// `Support Team <a@b>` is told about its display name rather than its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    Control,
    Bidi,
    Invisible,
    DisplayName,
    Quote,
    Comment,
    Whitespace,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Control => "must not contain control characters",
            Refusal::Bidi => "must not contain text-direction control characters",
            Refusal::Invisible => "must not contain invisible characters",
            Refusal::DisplayName => {
                "must be a bare address like name@example.com, without a display name or angle brackets"
            }
            Refusal::Quote => "must not contain quotes",
            Refusal::Comment => "must not contain comments or parentheses",
            Refusal::Whitespace => "must not contain spaces",
        }
    }
}

fn refusal(c: char) -> Option<Refusal> {
    match c {
        // Unicode Cc: C0, DEL and C1 (header injection with CR LF, terminal escapes).
        c if c.is_control() => Some(Refusal::Control),
        // Embeddings, overrides and isolates: they reorder what a reader sees.
        '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{061C}' => Some(Refusal::Bidi),
        // The rest of Cf: zero-width spaces and joiners, soft hyphen, BOM, tags.
        c if c.general_category() == GeneralCategory::Format => Some(Refusal::Invisible),
        '<' | '>' => Some(Refusal::DisplayName),
        '"' => Some(Refusal::Quote),
        '(' | ')' => Some(Refusal::Comment),
        c if c.is_whitespace() => Some(Refusal::Whitespace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn accepts_and_normalizes_valid_addresses() {
        let email = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Alice@Example.COM");
        assert_eq!(email.normalized(), "alice@example.com");
        assert_eq!(email.local_part(), "alice");
        assert!(Email::parse("first.last+tag@sub.example.co.uk").is_ok());
    }

    #[test]
    fn spellings_of_one_address_have_one_key() {
        // (reason, input, key)
        for (why, raw, key) in [
            ("plain", "alice@example.com", "alice@example.com"),
            ("upper case", "ALICE@EXAMPLE.COM", "alice@example.com"),
            (
                "fullwidth letters",
                "ａｌｉｃｅ@ｅｘａｍｐｌｅ.com",
                "alice@example.com",
            ),
            ("NFC é", "jos\u{e9}@example.com", "jos\u{e9}@example.com"),
            (
                "NFD e + combining acute",
                "jose\u{301}@example.com",
                "jos\u{e9}@example.com",
            ),
            (
                "upper NFD É",
                "JOSE\u{301}@example.com",
                "jos\u{e9}@example.com",
            ),
            (
                "Unicode domain",
                "alice@bücher.example",
                "alice@xn--bcher-kva.example",
            ),
            (
                "upper Unicode domain",
                "alice@BÜCHER.example",
                "alice@xn--bcher-kva.example",
            ),
            (
                "punycode domain",
                "alice@xn--bcher-kva.example",
                "alice@xn--bcher-kva.example",
            ),
            (
                "ideographic full stop in domain",
                "alice@example\u{3002}com",
                "alice@example.com",
            ),
            ("ligature ﬁ", "\u{fb01}le@example.com", "file@example.com"),
        ] {
            let email = Email::parse(raw).unwrap_or_else(|e| panic!("{why}: {raw:?}: {e}"));
            assert_eq!(email.normalized(), key, "{why}");
        }
    }

    #[test]
    fn stores_the_nfc_form_as_given() {
        let email = Email::parse(" JOSE\u{301}@Bücher.example ").unwrap();
        assert_eq!(email.as_str(), "JOS\u{c9}@Bücher.example");
        let fullwidth = Email::parse("ａｌｉｃｅ@example.com").unwrap();
        assert_eq!(
            fullwidth.as_str(),
            "ａｌｉｃｅ@example.com",
            "NFC, not NFKC"
        );
    }

    #[test]
    fn refuses_hostile_addresses_with_their_reason() {
        let bare = "must be a bare address like name@example.com, without a display name or angle brackets";
        // (reason, input, message)
        for (why, raw, message) in [
            ("display name", "Support Team <victim@example.com>", bare),
            ("angle brackets only", "<victim@example.com>", bare),
            (
                "fullwidth angle brackets",
                "\u{ff1c}victim@example.com\u{ff1e}",
                bare,
            ),
            (
                "quoted display name",
                "\"Support\" victim@example.com",
                "must not contain quotes",
            ),
            (
                "quoted local part",
                "\"a b\"@example.com",
                "must not contain quotes",
            ),
            (
                "comment",
                "victim(comment)@example.com",
                "must not contain comments or parentheses",
            ),
            (
                "space inside",
                "al ice@example.com",
                "must not contain spaces",
            ),
            (
                "tab inside",
                "al\tice@example.com",
                "must not contain control characters",
            ),
            (
                "no-break space",
                "al\u{a0}ice@example.com",
                "must not contain spaces",
            ),
            (
                "BEL",
                "alice\u{7}@example.com",
                "must not contain control characters",
            ),
            (
                "CR LF header injection",
                "alice@example.com\r\nBcc: x@example.com",
                "must not contain control characters",
            ),
            (
                "NUL",
                "alice\0@example.com",
                "must not contain control characters",
            ),
            (
                "C1 control",
                "alice\u{85}x@example.com",
                "must not contain control characters",
            ),
            (
                "right-to-left override",
                "alice\u{202e}moc.elpmaxe@example.com",
                "must not contain text-direction control characters",
            ),
            (
                "left-to-right isolate",
                "\u{2066}alice@example.com",
                "must not contain text-direction control characters",
            ),
            (
                "right-to-left mark",
                "alice\u{200f}@example.com",
                "must not contain text-direction control characters",
            ),
            (
                "zero-width space",
                "ali\u{200b}ce@example.com",
                "must not contain invisible characters",
            ),
            (
                "zero-width joiner",
                "ali\u{200d}ce@example.com",
                "must not contain invisible characters",
            ),
            (
                "byte order mark",
                "\u{feff}alice@example.com",
                "must not contain invisible characters",
            ),
            (
                "soft hyphen",
                "ali\u{ad}ce@example.com",
                "must not contain invisible characters",
            ),
        ] {
            assert_eq!(Email::parse(raw), Err(message), "{why}: {raw:?}");
        }
    }

    #[test]
    fn rejects_invalid_addresses() {
        let long = format!("{}@example.com", "a".repeat(243));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let long_local = format!("{}@example.com", "a".repeat(65));
        // (reason, input, message)
        for (why, raw, message) in [
            ("empty", "", "is required"),
            ("blank", "   ", "is required"),
            ("no @", "alice", "is not a valid email address"),
            ("no domain", "alice@", "is not a valid email address"),
            (
                "no local part",
                "@example.com",
                "is not a valid email address",
            ),
            (
                "domain without a dot",
                "alice@localhost",
                "is not a valid email address",
            ),
            (
                "two @",
                "alice@@example.com",
                "is not a valid email address",
            ),
            (
                "fullwidth @",
                "alice\u{ff20}example.com",
                "is not a valid email address",
            ),
            (
                "trailing dot",
                "alice@example.com.",
                "is not a valid email address",
            ),
            (
                "address literal",
                "alice@[127.0.0.1]",
                "is not a valid email address",
            ),
            (
                "underscore in domain",
                "alice@exa_mple.com",
                "is not a valid email address",
            ),
            (
                "leading hyphen in a label",
                "alice@-example.com",
                "is not a valid email address",
            ),
            (
                "bad punycode",
                "alice@xn--a.example",
                "is not a valid email address",
            ),
            (
                "64-character domain label",
                long_label.as_str(),
                "is not a valid email address",
            ),
            (
                "65-character local part",
                long_local.as_str(),
                "is not a valid email address",
            ),
            (
                "special in local part",
                "ali,ce@example.com",
                "is not a valid email address",
            ),
            (
                "255 characters",
                long.as_str(),
                "must be at most 254 characters",
            ),
        ] {
            assert_eq!(Email::parse(raw), Err(message), "{why}: {raw:?}");
        }
    }

    #[test]
    fn accepts_exactly_254_characters() {
        let domain = format!(
            "{}.{}.{}.com",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(57)
        );
        let raw = format!("{}@{domain}", "a".repeat(64));
        assert_eq!(raw.len(), 254);
        assert!(Email::parse(&raw).is_ok());
        assert_eq!(
            Email::parse(&format!("a{raw}")),
            Err("must be at most 254 characters")
        );
    }
}
