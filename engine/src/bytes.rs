//! Reading a stored record field by field: every read is checked, so a
//! short record, trailing bytes or a bad flag is an error of the caller's
//! kind, never a panic. The plugins' records (`int_systems::token`, the
//! market's) and the transaction index's directory read through it;
//! `BIG_ENDIAN` picks the byte order of their integers.

/// A reader over one record: `key` names the record in errors, and `err`
/// builds the caller's error from it and what is wrong.
pub struct FieldReader<'a, E, const BIG_ENDIAN: bool> {
    b: &'a [u8],
    key: &'static str,
    err: fn(&'static str, &'static str) -> E,
}

impl<'a, E, const BIG_ENDIAN: bool> FieldReader<'a, E, BIG_ENDIAN> {
    /// A reader over `b`.
    pub fn new(b: &'a [u8], key: &'static str, err: fn(&'static str, &'static str) -> E) -> Self {
        Self { b, key, err }
    }

    /// A reader over `b` past its first byte, which must be `version`.
    pub fn versioned(
        b: &'a [u8],
        key: &'static str,
        version: u8,
        err: fn(&'static str, &'static str) -> E,
    ) -> Result<Self, E> {
        match b.split_first() {
            Some((&v, rest)) if v == version => Ok(Self::new(rest, key, err)),
            Some(_) => Err(err(key, "unknown version")),
            None => Err(err(key, "empty")),
        }
    }

    /// The error `what` about this record.
    pub fn error(&self, what: &'static str) -> E {
        (self.err)(self.key, what)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.b.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], E> {
        if self.b.len() < n {
            return Err(self.error("too short"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    /// The next `N` bytes.
    pub fn arr<const N: usize>(&mut self) -> Result<[u8; N], E> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, E> {
        Ok(self.take(1)?[0])
    }

    /// A byte that is 0 or 1.
    pub fn flag(&mut self) -> Result<bool, E> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("bad flag")),
        }
    }

    /// Fails unless every byte was read.
    pub fn end(self) -> Result<(), E> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

macro_rules! ints {
    ($($name:ident: $t:ty),*) => {
        impl<E, const BIG_ENDIAN: bool> FieldReader<'_, E, BIG_ENDIAN> {
            $(
                #[doc = concat!("A `", stringify!($t), "` in the reader's byte order.")]
                pub fn $name(&mut self) -> Result<$t, E> {
                    let a = self.arr()?;
                    Ok(if BIG_ENDIAN { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) })
                }
            )*
        }
    };
}
ints!(u16: u16, u32: u32, u64: u64, u128: u128);

#[cfg(test)]
mod tests {
    use super::*;

    type R<'a> = FieldReader<'a, String, true>;

    fn err(key: &'static str, what: &'static str) -> String {
        format!("{key}: {what}")
    }

    #[test]
    fn fields_in_order_and_every_fault_an_error() {
        let b = [1u8, 0, 0, 0, 7, 1, 9];
        let mut r = R::versioned(&b, "k", 1, err).unwrap();
        assert_eq!(r.u32().unwrap(), 7);
        assert!(r.flag().unwrap());
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.end().unwrap_err(), "k: trailing bytes");
        let mut r = R::new(&b, "k", err);
        assert_eq!(r.u64().unwrap_err(), "k: too short");
        let mut le = FieldReader::<String, false>::new(&[7, 0], "k", err);
        assert_eq!(le.u16().unwrap(), 7);
        assert_eq!(R::versioned(&[], "k", 1, err).err().unwrap(), "k: empty");
        assert_eq!(
            R::versioned(&[2], "k", 1, err).err().unwrap(),
            "k: unknown version"
        );
        let mut r = R::new(&[2], "k", err);
        assert_eq!(r.flag().unwrap_err(), "k: bad flag");
    }
}
