//! `DocName`: a document name as SPEC §2 allows it, 1–255 characters of
//! `A–Z a–z 0–9 - _ . ~ : @`. Case-sensitive. Parse, don't validate: holding
//! a `DocName` proves the name is valid.

use std::fmt;
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocName(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a document name is 1-255 characters of A-Z a-z 0-9 - _ . ~ : @")]
pub struct InvalidDocName;

pub const MAX_LEN: usize = 255;

impl DocName {
    pub fn parse(s: &str) -> Result<Self, InvalidDocName> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~:@".contains(&b));
        if ok {
            Ok(DocName(Arc::from(s)))
        } else {
            Err(InvalidDocName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["a", "Doc", "team:x", "a-b_c.d~e:f@g", &"x".repeat(255)] {
            assert!(DocName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "a b", "a/b", "é", "a%20", "a?b", &"x".repeat(256)] {
            assert_eq!(DocName::parse(bad), Err(InvalidDocName), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_agrees_with_the_spec(s in "\\PC{0,300}") {
            let expected = (1..=255).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~:@".contains(c));
            prop_assert_eq!(DocName::parse(&s).is_ok(), expected);
        }
    }
}
