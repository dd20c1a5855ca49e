//! What is applied for: the kind of visa and how fast it is processed.

/// The kind of visa applied for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisaType {
    Tourist,
    Business,
    Transit,
}

/// How fast the application is processed (express costs more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingSpeed {
    Standard,
    Express,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a {what}; expected one of: {expected}")]
pub struct UnknownVariant {
    pub value: String,
    pub what: &'static str,
    pub expected: &'static str,
}

macro_rules! string_enum {
    ($ty:ident, $what:literal, $($variant:ident => $s:literal),+) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::visa::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    _ => Err($crate::visa::UnknownVariant {
                        value: s.to_string(),
                        what: $what,
                        expected: concat!($($s, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(VisaType, "visa type", Tourist => "tourist", Business => "business", Transit => "transit");
string_enum!(ProcessingSpeed, "processing speed", Standard => "standard", Express => "express");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_strings() {
        for v in VisaType::ALL {
            assert_eq!(v.as_str().parse::<VisaType>().unwrap(), *v);
        }
        for s in ProcessingSpeed::ALL {
            assert_eq!(s.as_str().parse::<ProcessingSpeed>().unwrap(), *s);
        }
        let err = "diplomatic".parse::<VisaType>().unwrap_err();
        assert_eq!(err.expected, "tourist business transit");
    }
}
