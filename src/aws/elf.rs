//! What a Linux executable needs from the machine that runs it, read from its ELF headers: the
//! CPU it was built for, its program interpreter (the dynamic loader) and the newest glibc symbol
//! version it requires. The worker runs Ubuntu 24.04 (glibc 2.39); a binary built on a newer
//! distribution links against newer `GLIBC_2.xx` symbol versions and dies at start with
//! "version `GLIBC_2.xx' not found", in a systemd restart loop nobody sees. Checked before upload.
//!
//! Hand-written on purpose (a few dozen lines against a crate that parses every object format):
//! the loader's own view is read, the dynamic segment (`PT_DYNAMIC`) and its `DT_VERNEED` list
//! (the `.gnu.version_r` section), located through the program headers, so a binary stripped of
//! its section headers is read the same way. Only 64-bit little-endian ELF is accepted: the
//! worker is x86_64 or aarch64.

use std::io::{Read, Seek, SeekFrom};

/// glibc of the worker's image (Ubuntu 24.04 LTS, `libc6` 2.39).
pub const WORKER_GLIBC: (u32, u32) = (2, 39);

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_VERNEED: i64 = 0x6fff_fffe;
const DT_VERNEEDNUM: i64 = 0x6fff_ffff;
/// Bounds against a corrupt file sending the reader around in circles.
const MAX_ENTRIES: usize = 4096;
const MAX_NAME: usize = 4096;

/// The CPU an ELF file was built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    X86_64,
    Aarch64,
    /// Any other `e_machine`.
    Other(u16),
}

impl Machine {
    /// The worker architecture (`--worker-arch`) this machine runs on, when it is one.
    pub fn worker_arch(self) -> Option<&'static str> {
        match self {
            Machine::X86_64 => Some("amd64"),
            Machine::Aarch64 => Some("arm64"),
            Machine::Other(_) => None,
        }
    }
}

/// What the loader needs to run the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needs {
    pub machine: Machine,
    /// The program interpreter (`PT_INTERP`); `None` for a static executable.
    pub interpreter: Option<String>,
    /// The newest `GLIBC_x.y[.z]` version any symbol needs, as numbers; `None` when none does.
    pub glibc: Option<Vec<u32>>,
}

/// Why a file is not a usable worker binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// Not an ELF file at all (a macOS Mach-O, a script, a text file).
    NotElf,
    /// ELF, but 32-bit or big-endian.
    Layout(&'static str),
    /// Its headers point outside the file or loop.
    Corrupt(&'static str),
}

impl Unfit {
    pub fn describe(&self) -> String {
        match self {
            Unfit::NotElf => "is not a Linux executable (not an ELF file)".into(),
            Unfit::Layout(what) => {
                format!("is a {what} ELF file; the worker runs 64-bit little-endian Linux")
            }
            Unfit::Corrupt(what) => format!("is not a readable ELF executable ({what})"),
        }
    }
}

struct Reader<'a, R> {
    r: &'a mut R,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn bytes(&mut self, at: u64, n: usize) -> Result<Vec<u8>, Unfit> {
        let mut buf = vec![0u8; n];
        self.r
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.r.read_exact(&mut buf))
            .map_err(|_| Unfit::Corrupt("a header points past the end of the file"))?;
        Ok(buf)
    }

    /// A NUL-terminated string at `at` (at most [`MAX_NAME`] bytes).
    fn cstr(&mut self, at: u64) -> Result<String, Unfit> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        self.r
            .seek(SeekFrom::Start(at))
            .map_err(|_| Unfit::Corrupt("a name points past the end of the file"))?;
        loop {
            let n = self
                .r
                .read(&mut chunk)
                .map_err(|_| Unfit::Corrupt("a name cannot be read"))?;
            if n == 0 {
                return Err(Unfit::Corrupt("a name runs past the end of the file"));
            }
            if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..n]);
            if out.len() > MAX_NAME {
                return Err(Unfit::Corrupt("a name is not terminated"));
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The file offset of virtual address `va`, through the loadable segments.
fn file_offset(loads: &[Segment], va: u64) -> Result<u64, Unfit> {
    loads
        .iter()
        .find(|s| s.vaddr <= va && va < s.vaddr.saturating_add(s.filesz))
        .map(|s| va - s.vaddr + s.offset)
        .ok_or(Unfit::Corrupt(
            "a dynamic entry points outside the loaded segments",
        ))
}

/// `GLIBC_2.39` -> [2, 39]; other version names (`GLIBC_PRIVATE`, `GLIBC_ABI_DT_RELR`,
/// `GCC_3.0`) -> None.
pub fn glibc_version(name: &str) -> Option<Vec<u32>> {
    let rest = name.strip_prefix("GLIBC_")?;
    rest.split('.').map(|p| p.parse().ok()).collect()
}

/// Reads what the file at `r` needs from the machine that runs it.
pub fn read_needs<R: Read + Seek>(r: &mut R) -> Result<Needs, Unfit> {
    let mut rd = Reader { r };
    let head = rd.bytes(0, 64).map_err(|_| Unfit::NotElf)?;
    if head[..4] != *b"\x7fELF" {
        return Err(Unfit::NotElf);
    }
    match (head[4], head[5]) {
        (2, 1) => {}
        (1, _) => return Err(Unfit::Layout("32-bit")),
        (_, 2) => return Err(Unfit::Layout("big-endian")),
        _ => return Err(Unfit::Corrupt("unknown ELF class or byte order")),
    }
    let machine = match u16_at(&head, 18) {
        EM_X86_64 => Machine::X86_64,
        EM_AARCH64 => Machine::Aarch64,
        other => Machine::Other(other),
    };
    let (phoff, phentsize, phnum) = (
        u64_at(&head, 32),
        usize::from(u16_at(&head, 54)),
        usize::from(u16_at(&head, 56)),
    );
    if phnum > 0 && phentsize < 56 {
        return Err(Unfit::Corrupt("program headers too small"));
    }
    let table = rd.bytes(phoff, phentsize * phnum)?;
    let segments: Vec<Segment> = table
        .chunks_exact(phentsize.max(1))
        .take(phnum)
        .map(|p| Segment {
            kind: u32_at(p, 0),
            offset: u64_at(p, 8),
            vaddr: u64_at(p, 16),
            filesz: u64_at(p, 32),
        })
        .collect();
    let interpreter = match segments.iter().find(|s| s.kind == PT_INTERP) {
        Some(s) => Some(rd.cstr(s.offset)?),
        None => None,
    };
    let loads: Vec<Segment> = segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .copied()
        .collect();
    let mut glibc: Option<Vec<u32>> = None;
    if let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) {
        let n = (dynamic.filesz / 16).min(MAX_ENTRIES as u64) as usize;
        let entries = rd.bytes(dynamic.offset, n * 16)?;
        let (mut strtab, mut verneed, mut verneednum) = (None, None, 0u64);
        for e in entries.chunks_exact(16) {
            let (tag, val) = (u64_at(e, 0) as i64, u64_at(e, 8));
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab = Some(val),
                DT_VERNEED => verneed = Some(val),
                DT_VERNEEDNUM => verneednum = val,
                _ => {}
            }
        }
        if let (Some(strtab), Some(verneed)) = (strtab, verneed) {
            let strings = file_offset(&loads, strtab)?;
            let mut at = file_offset(&loads, verneed)?;
            let mut seen = 0usize;
            for _ in 0..verneednum.min(MAX_ENTRIES as u64) {
                let vn = rd.bytes(at, 16)?;
                let (count, aux, next) = (u16_at(&vn, 2), u32_at(&vn, 8), u32_at(&vn, 12));
                let mut a = at + u64::from(aux);
                for _ in 0..count {
                    seen += 1;
                    if seen > MAX_ENTRIES {
                        return Err(Unfit::Corrupt("too many version requirements"));
                    }
                    let vna = rd.bytes(a, 16)?;
                    let name = rd.cstr(strings + u64::from(u32_at(&vna, 8)))?;
                    if let Some(v) = glibc_version(&name) {
                        if glibc.as_ref().is_none_or(|g| v > *g) {
                            glibc = Some(v);
                        }
                    }
                    match u32_at(&vna, 12) {
                        0 => break,
                        step => a += u64::from(step),
                    }
                }
                match next {
                    0 => break,
                    step => at += u64::from(step),
                }
            }
        }
    }
    Ok(Needs {
        machine,
        interpreter,
        glibc,
    })
}

/// Why a readable ELF executable cannot run on the worker (`None`: it can). `arch` is the
/// worker's (`amd64` or `arm64`).
pub fn refusal(n: &Needs, arch: &str) -> Option<String> {
    match n.machine.worker_arch() {
        Some(a) if a == arch => {}
        Some(a) => {
            return Some(format!(
                "is built for {a}, but the worker is {arch} (--worker-arch)"
            ))
        }
        None => {
            return Some(format!(
                "is built for another CPU (ELF machine {}), not the worker's {arch}",
                match n.machine {
                    Machine::Other(m) => m,
                    _ => 0,
                }
            ))
        }
    }
    if let Some(interp) = &n.interpreter {
        if interp.contains("ld-musl") {
            return Some(format!(
                "is linked dynamically against musl ({interp}), which Ubuntu does not have"
            ));
        }
        if !interp.contains("ld-linux") {
            return Some(format!(
                "needs the program interpreter {interp}, which is not glibc's loader"
            ));
        }
    }
    let (major, minor) = WORKER_GLIBC;
    match &n.glibc {
        Some(v) if *v > vec![major, minor] => Some(format!(
            "needs glibc {} (symbol version GLIBC_{}), newer than the worker's Ubuntu 24.04 glibc {major}.{minor}",
            dotted(v),
            dotted(v)
        )),
        _ => None,
    }
}

fn dotted(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal 64-bit little-endian ELF: one PT_LOAD covering the file at vaddr 0x400000, an
    /// optional PT_INTERP, and a PT_DYNAMIC whose DT_VERNEED lists `libs` (file, [versions]).
    pub(crate) fn tiny_elf(
        machine: u16,
        interp: Option<&str>,
        libs: &[(&str, &[&str])],
    ) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let mut strtab = vec![0u8];
        let mut add = |s: &str| {
            let at = strtab.len() as u32;
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            at
        };
        let mut verneed = Vec::new();
        for (i, (file, versions)) in libs.iter().enumerate() {
            let file_at = add(file);
            let last = i + 1 == libs.len();
            verneed.extend_from_slice(&1u16.to_le_bytes());
            verneed.extend_from_slice(&(versions.len() as u16).to_le_bytes());
            verneed.extend_from_slice(&file_at.to_le_bytes());
            verneed.extend_from_slice(&16u32.to_le_bytes());
            let next = if last {
                0
            } else {
                16 + 16 * versions.len() as u32
            };
            verneed.extend_from_slice(&next.to_le_bytes());
            for (j, v) in versions.iter().enumerate() {
                let name_at = add(v);
                verneed.extend_from_slice(&0u32.to_le_bytes());
                verneed.extend_from_slice(&0u16.to_le_bytes());
                verneed.extend_from_slice(&(j as u16 + 2).to_le_bytes());
                verneed.extend_from_slice(&name_at.to_le_bytes());
                let next: u32 = if j + 1 == versions.len() { 0 } else { 16 };
                verneed.extend_from_slice(&next.to_le_bytes());
            }
        }
        let phnum = 2 + usize::from(interp.is_some());
        let ph_end = 64 + 56 * phnum as u64;
        let interp_at = ph_end;
        let interp_bytes = interp
            .map(|s| format!("{s}\0").into_bytes())
            .unwrap_or_default();
        let strtab_at = interp_at + interp_bytes.len() as u64;
        let verneed_at = strtab_at + strtab.len() as u64;
        let dynamic_at = verneed_at + verneed.len() as u64;
        let mut dynamic = Vec::new();
        let mut entry = |tag: i64, val: u64| {
            dynamic.extend_from_slice(&tag.to_le_bytes());
            dynamic.extend_from_slice(&val.to_le_bytes());
        };
        entry(DT_STRTAB, BASE + strtab_at);
        if !libs.is_empty() {
            entry(DT_VERNEED, BASE + verneed_at);
            entry(DT_VERNEEDNUM, libs.len() as u64);
        }
        entry(DT_NULL, 0);
        let total = dynamic_at + dynamic.len() as u64;

        let mut f = Vec::new();
        f.extend_from_slice(b"\x7fELF");
        f.extend_from_slice(&[2, 1, 1, 0]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
        f.extend_from_slice(&machine.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&(BASE + 0x1000).to_le_bytes()); // entry
        f.extend_from_slice(&64u64.to_le_bytes()); // phoff
        f.extend_from_slice(&0u64.to_le_bytes()); // shoff: no section headers
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&64u16.to_le_bytes());
        f.extend_from_slice(&56u16.to_le_bytes());
        f.extend_from_slice(&(phnum as u16).to_le_bytes());
        f.extend_from_slice(&[0; 6]);
        assert_eq!(f.len(), 64);
        let mut ph = |kind: u32, off: u64, size: u64| {
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&4u32.to_le_bytes());
            f.extend_from_slice(&off.to_le_bytes());
            f.extend_from_slice(&(BASE + off).to_le_bytes());
            f.extend_from_slice(&(BASE + off).to_le_bytes());
            f.extend_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&8u64.to_le_bytes());
        };
        ph(PT_LOAD, 0, total);
        if interp.is_some() {
            ph(PT_INTERP, interp_at, interp_bytes.len() as u64);
        }
        ph(PT_DYNAMIC, dynamic_at, dynamic.len() as u64);
        f.extend_from_slice(&interp_bytes);
        f.extend_from_slice(&strtab);
        f.extend_from_slice(&verneed);
        f.extend_from_slice(&dynamic);
        f
    }

    const GLIBC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

    fn needs(bytes: Vec<u8>) -> Result<Needs, Unfit> {
        read_needs(&mut Cursor::new(bytes))
    }

    #[test]
    fn version_names() {
        assert_eq!(glibc_version("GLIBC_2.39"), Some(vec![2, 39]));
        assert_eq!(glibc_version("GLIBC_2.2.5"), Some(vec![2, 2, 5]));
        assert_eq!(glibc_version("GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version("GLIBC_ABI_DT_RELR"), None);
        assert_eq!(glibc_version("GCC_3.0"), None);
        // Compared as numbers: 2.4 is older than 2.39.
        assert!(glibc_version("GLIBC_2.4") < glibc_version("GLIBC_2.39"));
    }

    #[test]
    fn the_newest_glibc_requirement_over_every_library_is_found() {
        let n = needs(tiny_elf(
            EM_X86_64,
            Some(GLIBC_LOADER),
            &[
                ("libgcc_s.so.1", &["GCC_3.0", "GCC_4.2.0"]),
                (
                    "libc.so.6",
                    &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_2.4", "GLIBC_PRIVATE"],
                ),
                ("libm.so.6", &["GLIBC_2.29"]),
            ],
        ))
        .unwrap();
        assert_eq!(n.machine, Machine::X86_64);
        assert_eq!(n.interpreter.as_deref(), Some(GLIBC_LOADER));
        assert_eq!(n.glibc, Some(vec![2, 34]));
    }

    #[test]
    fn the_decision() {
        let elf = |machine, interp: Option<&str>, versions: &[&str]| {
            needs(tiny_elf(machine, interp, &[("libc.so.6", versions)])).unwrap()
        };
        let aarch = "/lib/ld-linux-aarch64.so.1";
        let cases: Vec<(&str, Needs, &str, Option<&str>)> = vec![
            (
                "glibc 2.39 exactly",
                elf(EM_X86_64, Some(GLIBC_LOADER), &["GLIBC_2.39"]),
                "amd64",
                None,
            ),
            (
                "older glibc",
                elf(
                    EM_X86_64,
                    Some(GLIBC_LOADER),
                    &["GLIBC_2.17", "GLIBC_2.2.5"],
                ),
                "amd64",
                None,
            ),
            (
                "newer glibc",
                elf(
                    EM_X86_64,
                    Some(GLIBC_LOADER),
                    &["GLIBC_2.2.5", "GLIBC_2.41"],
                ),
                "amd64",
                Some("needs glibc 2.41"),
            ),
            (
                "2.39.1 is newer than 2.39",
                elf(EM_X86_64, Some(GLIBC_LOADER), &["GLIBC_2.39.1"]),
                "amd64",
                Some("needs glibc 2.39.1"),
            ),
            (
                "static (musl or glibc)",
                elf(EM_X86_64, None, &[]),
                "amd64",
                None,
            ),
            (
                "arm64 glibc",
                elf(EM_AARCH64, Some(aarch), &["GLIBC_2.38"]),
                "arm64",
                None,
            ),
            (
                "amd64 binary, arm64 worker",
                elf(EM_X86_64, Some(GLIBC_LOADER), &["GLIBC_2.17"]),
                "arm64",
                Some("built for amd64, but the worker is arm64"),
            ),
            (
                "arm64 binary, amd64 worker",
                elf(EM_AARCH64, Some(aarch), &[]),
                "amd64",
                Some("built for arm64"),
            ),
            (
                "another CPU",
                elf(40, None, &[]),
                "amd64",
                Some("another CPU (ELF machine 40)"),
            ),
            (
                "dynamic musl",
                elf(EM_X86_64, Some("/lib/ld-musl-x86_64.so.1"), &[]),
                "amd64",
                Some("dynamically against musl"),
            ),
        ];
        for (what, n, arch, expect) in cases {
            let got = refusal(&n, arch);
            match (expect, &got) {
                (None, None) => {}
                (Some(part), Some(msg)) if msg.contains(part) => {}
                _ => panic!("{what}: expected {expect:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn what_is_not_a_usable_elf() {
        assert_eq!(needs(b"#!/bin/sh\necho hi\n".to_vec()), Err(Unfit::NotElf));
        // A macOS Mach-O 64-bit header.
        let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe];
        macho.resize(4096, 0);
        assert_eq!(needs(macho), Err(Unfit::NotElf));
        let mut elf32 = tiny_elf(EM_X86_64, None, &[]);
        elf32[4] = 1;
        assert_eq!(needs(elf32), Err(Unfit::Layout("32-bit")));
        let mut big = tiny_elf(EM_X86_64, None, &[]);
        big[5] = 2;
        assert_eq!(needs(big), Err(Unfit::Layout("big-endian")));
        // Cut short: the dynamic segment points past the end.
        let mut cut = tiny_elf(
            EM_X86_64,
            Some(GLIBC_LOADER),
            &[("libc.so.6", &["GLIBC_2.34"])],
        );
        cut.truncate(cut.len() - 20);
        assert!(matches!(needs(cut), Err(Unfit::Corrupt(_))));
    }

    #[test]
    fn this_test_binary_reads() {
        // The real thing: whatever built this test can read its own headers.
        let exe = std::env::current_exe().unwrap();
        let n = read_needs(&mut std::fs::File::open(exe).unwrap()).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(n.machine, Machine::X86_64);
        }
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(n.glibc.as_ref().is_some_and(|v| v[0] == 2), "{n:?}");
        }
    }
}
