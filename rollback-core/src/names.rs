//! Enums whose values are also words: in records, journals, events, the CLI's
//! arguments and the bindings. One macro writes each enum's string forms, so the
//! word a record says and the word a parser accepts cannot drift apart.

/// Declares a `Copy` enum whose every variant has one word. The enum gets `as_str`,
/// `ALL`, `Display`, a `FromStr` that names the words it accepts, serde as that word,
/// and comparison with `&str` (so `record.kind == "drill"` reads as it always did).
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $word)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word for this value, as records, events and the bindings spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, not `write_str`: tables print these with a width.
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::Error;
            /// Parses the word; an unknown one is a [`ConfigInvalid`](crate::ErrorKind::ConfigInvalid)
            /// error that lists the accepted words.
            fn from_str(s: &str) -> crate::error::Result<Self> {
                match s {
                    $( $word => Ok($name::$variant), )+
                    other => Err(crate::error::Error::config(format!(
                        "{} `{}` is not one of {}",
                        $what,
                        other,
                        [$($word),+].join(", ")
                    ))),
                }
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
pub(crate) use word_enum;

#[cfg(test)]
mod tests {
    use crate::{EventKind, EventStatus, Level, RecordKind, Severity, Status, StepAction, StepStatus};

    /// Each word parses back to its value and serializes as itself, so a record
    /// written before these were enums reads the same.
    fn round_trip<T>(all: &[T])
    where
        T: Copy + std::fmt::Display + std::str::FromStr + PartialEq + std::fmt::Debug + serde::Serialize,
        T: serde::de::DeserializeOwned,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        for v in all {
            let word = v.to_string();
            assert_eq!(word.parse::<T>().unwrap(), *v);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<T>(&format!("\"{word}\"")).unwrap(), *v);
        }
    }

    #[test]
    fn every_word_round_trips() {
        round_trip(Severity::ALL);
        round_trip(Status::ALL);
        round_trip(RecordKind::ALL);
        round_trip(Level::ALL);
        round_trip(StepAction::ALL);
        round_trip(StepStatus::ALL);
        round_trip(EventKind::ALL);
        round_trip(EventStatus::ALL);
        round_trip(crate::watch::PolicyAction::ALL);
        round_trip(crate::watch::WatchOutcome::ALL);
        round_trip(crate::Action::ALL);
        round_trip(crate::DataImpact::ALL);
        round_trip(crate::notify::NotifyOn::ALL);
    }

    #[test]
    fn an_unknown_word_is_refused_by_name() {
        let e = "urgent".parse::<Severity>().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ConfigInvalid);
        assert_eq!(e.message(), "severity `urgent` is not one of low, medium, high, critical");
    }

    #[test]
    fn compares_with_its_word() {
        assert!(RecordKind::Drill == "drill");
        assert!(StepAction::HealthGate == "health_gate");
        assert!(EventKind::StepFinished != "step_started");
    }
}
