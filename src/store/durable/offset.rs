//! [`Offset`]: a position in a stream, printed fixed-width so text order is stream order.

use std::fmt;
use std::str::FromStr;

/// A position in a stream: `<epoch>_<bytes>`, both 16 decimal digits (wider numbers are
/// accepted but never produced). This gateway's offsets all have epoch 0 and count the
/// bytes stored before the position; an offset a client makes up with a higher epoch lies
/// past every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    epoch: u64,
    bytes: u64,
}

/// Why a string is not an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be -1, now, or an offset this server returned (<digits>_<digits>)")]
pub struct ParseOffsetError;

impl Offset {
    /// The start of every stream (what `offset=-1` means).
    pub const START: Self = Self { epoch: 0, bytes: 0 };

    /// Past every message of every stream (what a read for the tail asks after).
    pub const END: Self = Self {
        epoch: u64::MAX,
        bytes: u64::MAX,
    };

    /// The offset after `bytes` stored bytes.
    pub fn at(bytes: u64) -> Self {
        Self { epoch: 0, bytes }
    }

    /// Bytes stored before this position, when it is one of this gateway's (epoch 0).
    pub fn bytes(self) -> Option<u64> {
        (self.epoch == 0).then_some(self.bytes)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", self.epoch, self.bytes)
    }
}

impl FromStr for Offset {
    type Err = ParseOffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, bytes) = s.split_once('_').ok_or(ParseOffsetError)?;
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseOffsetError);
            }
            part.parse::<u64>().map_err(|_| ParseOffsetError)
        };
        Ok(Self {
            epoch: number(epoch)?,
            bytes: number(bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_print_fixed_width_and_sort_as_text() {
        let small = Offset::at(9);
        let large = Offset::at(10);
        assert_eq!(small.to_string(), "0000000000000000_0000000000000009");
        assert!(small.to_string() < large.to_string());
        assert_eq!(large.to_string().parse::<Offset>(), Ok(large));
    }

    #[test]
    fn malformed_offsets_are_refused() {
        for bad in [
            "",
            "_",
            "1_",
            "_1",
            "a_1",
            "1_1_1",
            "-1",
            "now",
            "1 _2",
            "1_99999999999999999999999",
        ] {
            assert_eq!(bad.parse::<Offset>(), Err(ParseOffsetError), "{bad}");
        }
        assert!(
            "1_0"
                .parse::<Offset>()
                .is_ok_and(|o| o > Offset::at(u64::MAX))
        );
    }
}
