//! Postgres `numeric` in the binary wire format, straight from Arrow's `Decimal128`.
//!
//! arrow-pg converts decimals through `rust_decimal`, which holds 28 significant digits;
//! `numeric(30,15)` values beyond that came out scaled wrong. Postgres numeric has no such
//! limit, so Weir encodes the base-10000 digit groups from the `i128` itself.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use pgwire::api::Type;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

/// An unscaled value and its scale: `value / 10^scale`.
#[derive(Debug, Clone, Copy)]
pub struct PgNumeric {
    pub value: i128,
    pub scale: i8,
}

impl PgNumeric {
    /// The decimal digits before and after the point, without sign.
    fn parts(&self) -> (String, String) {
        let digits = self.value.unsigned_abs().to_string();
        if self.scale <= 0 {
            let zeros = "0".repeat((-self.scale) as usize);
            return (format!("{digits}{zeros}"), String::new());
        }
        let scale = self.scale as usize;
        let padded = if digits.len() <= scale { format!("{}{digits}", "0".repeat(scale + 1 - digits.len())) } else { digits };
        let (int, frac) = padded.split_at(padded.len() - scale);
        (int.to_string(), frac.to_string())
    }

    pub fn to_text(self) -> String {
        let (int, frac) = self.parts();
        let sign = if self.value < 0 { "-" } else { "" };
        if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") }
    }

    /// ndigits, weight, sign, dscale, then the base-10000 digits (Postgres's `numeric_send`).
    pub fn to_binary(self, out: &mut BytesMut) {
        let (int, frac) = self.parts();
        let int = int.trim_start_matches('0');
        // Integer part in groups of four from the right, fraction in groups of four from the left.
        let int_pad = (4 - int.len() % 4) % 4;
        let int_digits = format!("{}{int}", "0".repeat(int_pad));
        let frac_pad = (4 - frac.len() % 4) % 4;
        let frac_digits = format!("{frac}{}", "0".repeat(frac_pad));
        let group = |s: &str| -> Vec<i16> {
            s.as_bytes().chunks(4).map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + (d - b'0') as i16)).collect()
        };
        let int_groups = group(&int_digits);
        let mut groups = int_groups.clone();
        groups.extend(group(&frac_digits));
        let mut weight = int_groups.len() as i16 - 1;
        // Strip leading zero groups (moving the weight) and trailing zero groups.
        let lead = groups.iter().take_while(|g| **g == 0).count();
        groups.drain(..lead);
        weight -= lead as i16;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let dscale = self.scale.max(0) as i16;
        if groups.is_empty() {
            weight = 0;
        }
        out.put_i16(groups.len() as i16);
        out.put_i16(weight);
        out.put_u16(if self.value < 0 && !groups.is_empty() { 0x4000 } else { 0 });
        out.put_i16(dscale);
        for g in groups {
            out.put_i16(g);
        }
    }
}

/// Decodes a binary `numeric` parameter to an unscaled value at `scale` (rounding half away
/// from zero, as a cast to `numeric(p, s)` does). `None` for NaN, infinities or overflow.
pub fn decode_binary(bytes: &[u8], scale: i8) -> Option<i128> {
    let word = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*bytes.get(2 * i)?, *bytes.get(2 * i + 1)?])) };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i32;
    let sign = word(2)? as u16;
    if sign != 0 && sign != 0x4000 {
        return None;
    }
    let mut v: i128 = 0;
    for i in 0..ndigits {
        v = v.checked_mul(10_000)?.checked_add(word(4 + i)? as i128)?;
    }
    // v is in units of 10000^(weight - ndigits + 1); move to units of 10^-scale.
    let exp = 4 * (weight - ndigits as i32 + 1) + scale as i32;
    let v = if exp >= 0 {
        v.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        let div = 10i128.checked_pow((-exp) as u32)?;
        let (q, r) = (v / div, v % div);
        if r * 2 >= div { q + 1 } else { q }
    };
    Some(if sign == 0x4000 { -v } else { v })
}

impl ToSql for PgNumeric {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.to_binary(out);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl ToSqlText for PgNumeric {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.to_text().as_bytes());
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(value: i128, scale: i8) -> Vec<i16> {
        let mut b = BytesMut::new();
        PgNumeric { value, scale }.to_binary(&mut b);
        b.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn encodes_like_numeric_send() {
        // 12.50: 2 digits, weight 0, +, dscale 2, [12, 5000]
        assert_eq!(binary(1250, 2), vec![2, 0, 0, 2, 12, 5000]);
        // 100000000000000 (1e14) as numeric(30,15): [100, 0000, 0000, 0000] -> groups [100], weight 3
        assert_eq!(binary(100_000_000_000_000 * 10i128.pow(15), 15), vec![1, 3, 0, 15, 100]);
        // -0.001: weight -1, digits [10]
        assert_eq!(binary(-1, 3), vec![1, -1, 0x4000, 3, 10]);
        assert_eq!(binary(0, 2), vec![0, 0, 0, 2]);
        assert_eq!(PgNumeric { value: -5, scale: 3 }.to_text(), "-0.005");
        assert_eq!(PgNumeric { value: 1250, scale: 2 }.to_text(), "12.50");
    }

    #[test]
    fn decodes_what_it_encodes() {
        for (value, scale) in [(1250i128, 2i8), (-1, 3), (0, 2), (100_000_000_000_000 * 10i128.pow(15), 15), (7, 0)] {
            let mut b = BytesMut::new();
            PgNumeric { value, scale }.to_binary(&mut b);
            assert_eq!(decode_binary(&b, scale), Some(value), "{value} scale {scale}");
        }
        // 1.005 into numeric(10,2) rounds to 1.01
        let mut b = BytesMut::new();
        PgNumeric { value: 1005, scale: 3 }.to_binary(&mut b);
        assert_eq!(decode_binary(&b, 2), Some(101));
    }
}
