//! A read-only reader of BoltDB (bbolt) files, enough to read podman's
//! `libpod/bolt_state.db`.
//!
//! The format (bbolt `internal/common/page.go`, `meta.go`, `bucket.go`): the
//! file is an array of pages of the size recorded in the meta pages. Every
//! page starts with a 16-byte header: `id u64, flags u16, count u16,
//! overflow u32` (a page with `overflow` N spans N+1 pages). Pages 0 and 1
//! are meta pages (`magic 0xED0CDAED, version 2, page_size, flags, root
//! bucket {root pgid, sequence}, freelist, high-water pgid, txid,
//! checksum`, FNV-1a 64 over the fields before the checksum); the valid one
//! with the higher txid is current. A bucket is a B+tree: branch pages hold
//! `{pos u32, ksize u32, pgid u64}` elements, leaf pages `{flags u32, pos
//! u32, ksize u32, vsize u32}`, `pos` counting from the element itself. A
//! leaf element with flag 1 is a nested bucket whose value is its `{root,
//! sequence}` header; `root == 0` means an inline bucket whose page follows
//! the header inside the value. Integers are little-endian (the files are
//! written in the host's order, and flameprobe runs on x86_64).
//!
//! Everything is bounds-checked: a truncated or corrupt file gives a
//! [`BoltError`], never a panic, and a cyclic tree is cut off by a depth limit.

use std::fmt;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const BRANCH_ELEMENT: usize = 16;
const LEAF_ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Deeper than any real B+tree of a bounded file: a cycle in a corrupt one.
const MAX_DEPTH: u32 = 64;

/// Why a BoltDB file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoltError {
    #[error("not a BoltDB file (no valid meta page)")]
    NotBolt,
    #[error("corrupt BoltDB file: {0}")]
    Corrupt(String),
}

fn corrupt(what: impl fmt::Display) -> BoltError {
    BoltError::Corrupt(what.to_string())
}

/// An opened BoltDB file (its bytes, read once).
pub struct BoltDb {
    data: Vec<u8>,
    page_size: usize,
    root: u64,
    txid: u64,
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    page_size: u32,
    root: u64,
    high_water: u64,
    txid: u64,
}

impl BoltDb {
    /// Checks the meta pages of a whole file's bytes and keeps them.
    pub fn new(data: Vec<u8>) -> Result<BoltDb, BoltError> {
        let meta0 = parse_meta(&data, 0);
        let page_size = meta0.map(|m| m.page_size as usize);
        // Page 1 sits one page in; if page 0 is damaged, try the sizes
        // bbolt uses (the OS page size, usually 4 KiB).
        let candidates: Vec<usize> = match page_size {
            Some(s) => vec![s],
            None => vec![4096, 8192, 16384, 65536],
        };
        let meta1 = candidates
            .iter()
            .find_map(|&s| parse_meta(&data, s).filter(|m| m.page_size as usize == s));
        let meta = match (meta0, meta1) {
            (Some(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => return Err(BoltError::NotBolt),
        };
        if meta.root >= meta.high_water {
            return Err(corrupt(format!(
                "root page {} beyond the high-water mark {}",
                meta.root, meta.high_water
            )));
        }
        Ok(BoltDb {
            data,
            page_size: meta.page_size as usize,
            root: meta.root,
            txid: meta.txid,
        })
    }

    /// The id of the transaction that wrote the current state.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// The top-level bucket (the names of the database's buckets).
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            db: self,
            root: Root::Page(self.root),
        }
    }

    /// Page `id` with its overflow pages, from its header on.
    fn page(&self, id: u64) -> Result<&[u8], BoltError> {
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or_else(|| corrupt(format!("page id {id} out of range")))?;
        let header = self
            .data
            .get(start..start + PAGE_HEADER)
            .ok_or_else(|| corrupt(format!("page {id} beyond the end of the file")))?;
        let overflow = u32_at(header, 12)? as usize;
        let len = (overflow + 1)
            .checked_mul(self.page_size)
            .ok_or_else(|| corrupt(format!("page {id}: overflow {overflow} out of range")))?;
        // The last page of a file may be short of its full span only if
        // the file is truncated; elements are bounds-checked anyway.
        let end = (start + len).min(self.data.len());
        Ok(&self.data[start..end])
    }
}

fn parse_meta(data: &[u8], offset: usize) -> Option<Meta> {
    let page = data.get(offset..offset + PAGE_HEADER + 64)?;
    let flags = u16::from_le_bytes([page[8], page[9]]);
    if flags != META_PAGE {
        return None;
    }
    let m = &page[PAGE_HEADER..];
    let word32 = |at: usize| u32::from_le_bytes(m[at..at + 4].try_into().unwrap_or([0; 4]));
    let word64 = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap_or([0; 8]));
    if word32(0) != MAGIC || word32(4) != VERSION {
        return None;
    }
    if fnv1a64(&m[..56]) != word64(56) {
        return None;
    }
    let page_size = word32(8);
    if !(512..=(1 << 20)).contains(&page_size) {
        return None;
    }
    Some(Meta {
        page_size,
        root: word64(16),
        high_water: word64(40),
        txid: word64(48),
    })
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BoltError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| corrupt("truncated element"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, BoltError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt("truncated element"))
}

#[derive(Clone, Copy)]
enum Root<'a> {
    Page(u64),
    /// An inline bucket: its page's bytes.
    Inline(&'a [u8]),
}

/// A bucket: a sorted map from keys to values or nested buckets.
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    db: &'a BoltDb,
    root: Root<'a>,
}

/// What a key of a bucket holds.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    Data(&'a [u8]),
    Bucket(Bucket<'a>),
}

impl<'a> Bucket<'a> {
    /// Every key of the bucket in order, with its value.
    pub fn entries(&self) -> Result<Vec<(&'a [u8], Value<'a>)>, BoltError> {
        let mut out = Vec::new();
        match self.root {
            Root::Inline(page) => self.walk(page, 0, &mut out)?,
            Root::Page(id) => self.walk(self.db.page(id)?, 0, &mut out)?,
        }
        Ok(out)
    }

    /// The plain value at `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        Ok(self.entries()?.into_iter().find_map(|(k, v)| match v {
            Value::Data(d) if k == key => Some(d),
            _ => None,
        }))
    }

    /// The nested bucket at `key`.
    pub fn bucket(&self, key: &[u8]) -> Result<Option<Bucket<'a>>, BoltError> {
        Ok(self.entries()?.into_iter().find_map(|(k, v)| match v {
            Value::Bucket(b) if k == key => Some(b),
            _ => None,
        }))
    }

    fn walk(
        &self,
        page: &'a [u8],
        depth: u32,
        out: &mut Vec<(&'a [u8], Value<'a>)>,
    ) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(corrupt("bucket tree too deep (a cycle?)"));
        }
        if page.len() < PAGE_HEADER {
            return Err(corrupt("truncated page"));
        }
        let flags = u16::from_le_bytes([page[8], page[9]]);
        let count = usize::from(u16::from_le_bytes([page[10], page[11]]));
        match flags {
            BRANCH_PAGE => {
                for i in 0..count {
                    let at = PAGE_HEADER + i * BRANCH_ELEMENT;
                    let child = u64_at(page, at + 8)?;
                    let child_page = self.db.page(child)?;
                    self.walk(child_page, depth + 1, out)?;
                }
                Ok(())
            }
            LEAF_PAGE => {
                for i in 0..count {
                    let at = PAGE_HEADER + i * LEAF_ELEMENT;
                    let eflags = u32_at(page, at)?;
                    let pos = u32_at(page, at + 4)? as usize;
                    let ksize = u32_at(page, at + 8)? as usize;
                    let vsize = u32_at(page, at + 12)? as usize;
                    let kstart = at + pos;
                    let vstart = kstart + ksize;
                    let key = page
                        .get(kstart..vstart)
                        .ok_or_else(|| corrupt("leaf key beyond its page"))?;
                    let value = page
                        .get(vstart..vstart + vsize)
                        .ok_or_else(|| corrupt("leaf value beyond its page"))?;
                    let value = if eflags & BUCKET_LEAF_FLAG != 0 {
                        Value::Bucket(self.nested(value)?)
                    } else {
                        Value::Data(value)
                    };
                    out.push((key, value));
                }
                Ok(())
            }
            other => Err(corrupt(format!(
                "expected a branch or leaf page, found flags {other:#x}"
            ))),
        }
    }

    fn nested(&self, value: &'a [u8]) -> Result<Bucket<'a>, BoltError> {
        let root = u64_at(value, 0)?;
        let root = if root == 0 {
            Root::Inline(
                value
                    .get(BUCKET_HEADER..)
                    .ok_or_else(|| corrupt("truncated inline bucket"))?,
            )
        } else {
            Root::Page(root)
        };
        Ok(Bucket { db: self.db, root })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BoltDB files for tests, page by page, in bbolt's layout.
    pub struct Builder {
        pub page_size: usize,
        pub pages: Vec<Vec<u8>>,
    }

    pub enum Item<'b> {
        Data(&'b [u8], &'b [u8]),
        /// A bucket stored inline in its parent's leaf.
        Inline(&'b [u8], Vec<Item<'b>>),
        /// A bucket with its own root page.
        Paged(&'b [u8], u64),
    }

    impl Builder {
        pub fn new(page_size: usize) -> Builder {
            // Pages 0 and 1 (meta) and 2 (freelist) are filled in `finish`.
            Builder {
                page_size,
                pages: vec![vec![], vec![], vec![]],
            }
        }

        /// Encodes a leaf page (header + elements + data) without padding.
        pub fn leaf(id: u64, items: &[Item<'_>]) -> Vec<u8> {
            let mut payloads: Vec<(u32, Vec<u8>, Vec<u8>)> = Vec::new();
            for it in items {
                match it {
                    Item::Data(k, v) => payloads.push((0, k.to_vec(), v.to_vec())),
                    Item::Inline(k, sub) => {
                        let mut v = vec![0u8; BUCKET_HEADER];
                        v.extend(Self::leaf(0, sub));
                        payloads.push((BUCKET_LEAF_FLAG, k.to_vec(), v));
                    }
                    Item::Paged(k, root) => {
                        let mut v = root.to_le_bytes().to_vec();
                        v.extend(0u64.to_le_bytes());
                        payloads.push((BUCKET_LEAF_FLAG, k.to_vec(), v));
                    }
                }
            }
            let mut page = header(id, LEAF_PAGE, payloads.len() as u16, 0);
            let mut data: Vec<u8> = Vec::new();
            let elems_end = PAGE_HEADER + payloads.len() * LEAF_ELEMENT;
            for (i, (flags, k, v)) in payloads.iter().enumerate() {
                let at = PAGE_HEADER + i * LEAF_ELEMENT;
                let pos = (elems_end + data.len() - at) as u32;
                page.extend(flags.to_le_bytes());
                page.extend(pos.to_le_bytes());
                page.extend((k.len() as u32).to_le_bytes());
                page.extend((v.len() as u32).to_le_bytes());
                data.extend(k);
                data.extend(v);
            }
            page.extend(data);
            page
        }

        pub fn branch(id: u64, children: &[(&[u8], u64)]) -> Vec<u8> {
            let mut page = header(id, BRANCH_PAGE, children.len() as u16, 0);
            let elems_end = PAGE_HEADER + children.len() * BRANCH_ELEMENT;
            let mut data: Vec<u8> = Vec::new();
            for (i, (k, child)) in children.iter().enumerate() {
                let at = PAGE_HEADER + i * BRANCH_ELEMENT;
                page.extend(((elems_end + data.len() - at) as u32).to_le_bytes());
                page.extend((k.len() as u32).to_le_bytes());
                page.extend(child.to_le_bytes());
                data.extend(*k);
            }
            page.extend(data);
            page
        }

        /// Adds a page (with overflow pages if it is bigger than one).
        pub fn add(&mut self, mut page: Vec<u8>) -> u64 {
            let id = self.pages.len() as u64;
            page[..8].copy_from_slice(&id.to_le_bytes());
            let span = page.len().div_ceil(self.page_size).max(1);
            page[12..16].copy_from_slice(&((span - 1) as u32).to_le_bytes());
            page.resize(span * self.page_size, 0);
            self.pages.push(page);
            for _ in 1..span {
                self.pages.push(Vec::new());
            }
            id
        }

        pub fn finish(mut self, root: u64, txid: u64) -> Vec<u8> {
            let high_water = self.pages.len() as u64;
            for (i, tx) in [(0usize, txid - 1), (1, txid)] {
                let mut p = header(i as u64, META_PAGE, 0, 0);
                let mut m = Vec::new();
                m.extend(MAGIC.to_le_bytes());
                m.extend(VERSION.to_le_bytes());
                m.extend((self.page_size as u32).to_le_bytes());
                m.extend(0u32.to_le_bytes());
                m.extend(root.to_le_bytes());
                m.extend(0u64.to_le_bytes());
                m.extend(2u64.to_le_bytes());
                m.extend(high_water.to_le_bytes());
                m.extend(tx.to_le_bytes());
                let sum = fnv1a64(&m);
                m.extend(sum.to_le_bytes());
                p.extend(m);
                p.resize(self.page_size, 0);
                self.pages[i] = p;
            }
            let mut free = header(2, 0x10, 0, 0);
            free.resize(self.page_size, 0);
            self.pages[2] = free;
            self.pages.concat()
        }
    }

    fn header(id: u64, flags: u16, count: u16, overflow: u32) -> Vec<u8> {
        let mut h = id.to_le_bytes().to_vec();
        h.extend(flags.to_le_bytes());
        h.extend(count.to_le_bytes());
        h.extend(overflow.to_le_bytes());
        h
    }

    fn keys(b: &Bucket<'_>) -> Vec<String> {
        b.entries()
            .unwrap()
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn reads_paged_inline_and_branching_buckets() {
        let mut b = Builder::new(4096);
        // A bucket split over two leaves under a branch, one value
        // spilling into overflow pages.
        let big = vec![b'x'; 10_000];
        let left = b.add(Builder::leaf(
            0,
            &[Item::Data(b"a", b"1"), Item::Data(b"b", &big)],
        ));
        let right = b.add(Builder::leaf(0, &[Item::Data(b"c", b"3")]));
        let branch = b.add(Builder::branch(0, &[(b"a", left), (b"c", right)]));
        let root = b.add(Builder::leaf(
            0,
            &[
                Item::Paged(b"big", branch),
                Item::Inline(b"small", vec![Item::Data(b"k", b"v")]),
                Item::Data(b"plain", b"p"),
            ],
        ));
        let db = BoltDb::new(b.finish(root, 7)).unwrap();
        assert_eq!(db.txid(), 7);
        let top = db.root();
        assert_eq!(keys(&top), ["big", "small", "plain"]);
        let big_bucket = top.bucket(b"big").unwrap().unwrap();
        assert_eq!(keys(&big_bucket), ["a", "b", "c"]);
        assert_eq!(big_bucket.get(b"b").unwrap().unwrap().len(), 10_000);
        assert_eq!(big_bucket.get(b"c").unwrap(), Some(&b"3"[..]));
        let small = top.bucket(b"small").unwrap().unwrap();
        assert_eq!(small.get(b"k").unwrap(), Some(&b"v"[..]));
        // A value is not a bucket and vice versa.
        assert!(top.bucket(b"plain").unwrap().is_none());
        assert!(top.get(b"small").unwrap().is_none());
    }

    #[test]
    fn rejects_garbage_and_corruption_without_panicking() {
        assert_eq!(BoltDb::new(Vec::new()).err(), Some(BoltError::NotBolt));
        assert_eq!(BoltDb::new(vec![0; 8192]).err(), Some(BoltError::NotBolt));

        let mut b = Builder::new(4096);
        // Page 3: a branch whose only child is itself.
        let cycle = b.add(Builder::branch(0, &[(b"k", 3)]));
        let root = b.add(Builder::leaf(0, &[Item::Paged(b"loop", cycle)]));
        let file = b.finish(root, 2);
        // A cycle in the tree: cut off, not a stack overflow.
        let db = BoltDb::new(file.clone()).unwrap();
        let looped = db.root().bucket(b"loop").unwrap().unwrap();
        assert!(looped.entries().is_err());

        // A bad checksum on the newer meta falls back to the older one.
        let mut bad = file.clone();
        bad[4096 + PAGE_HEADER + 48] ^= 0xff; // meta 1's txid
        assert_eq!(BoltDb::new(bad).unwrap().txid(), 1);

        // Truncation and random bit flips: errors or data, never a panic.
        let truncated = file[..4 * 4096 + 20].to_vec();
        let db = BoltDb::new(truncated).unwrap();
        assert!(db.root().entries().is_err());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut f = file.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % f.len();
                f[at] ^= (seed >> 32) as u8 | 1;
            }
            if let Ok(db) = BoltDb::new(f) {
                if let Ok(entries) = db.root().entries() {
                    for (_, v) in entries {
                        if let Value::Bucket(b) = v {
                            let _ = b.entries();
                        }
                    }
                }
            }
        }
    }
}
