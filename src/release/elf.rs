//! Which machine an ELF file is built for: `e_machine` in its header. A release
//! for another architecture is refused before it is installed.

/// ELF machine numbers (`e_machine`) of the architectures the agent is built for.
pub const EM_386: u16 = 3;
pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const EM_RISCV: u16 = 243;

/// The machine this binary was built for.
pub const HERE: u16 = if cfg!(target_arch = "aarch64") {
    EM_AARCH64
} else if cfg!(target_arch = "x86_64") {
    EM_X86_64
} else if cfg!(target_arch = "arm") {
    EM_ARM
} else if cfg!(target_arch = "x86") {
    EM_386
} else if cfg!(target_arch = "riscv64") {
    EM_RISCV
} else {
    0
};

/// `e_machine` of an ELF file from its first bytes (at least 20); None when
/// they are not an ELF header.
pub fn machine(head: &[u8]) -> Option<u16> {
    if head.len() < 20 || head[..4] != *b"\x7fELF" {
        return None;
    }
    let b = [head[18], head[19]];
    // EI_DATA: 1 little-endian, 2 big-endian.
    match head[5] {
        1 => Some(u16::from_le_bytes(b)),
        2 => Some(u16::from_be_bytes(b)),
        _ => None,
    }
}

/// A machine number as people say it.
pub fn name(m: u16) -> String {
    match m {
        EM_386 => "x86 (32-bit)".into(),
        EM_ARM => "arm (32-bit)".into(),
        EM_X86_64 => "x86_64".into(),
        EM_AARCH64 => "aarch64".into(),
        EM_RISCV => "riscv".into(),
        m => format!("ELF machine {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(data: u8, machine: [u8; 2]) -> Vec<u8> {
        let mut h = b"\x7fELF\x02".to_vec();
        h.push(data);
        h.resize(18, 0);
        h.extend_from_slice(&machine);
        h.resize(64, 0);
        h
    }

    #[test]
    fn reads_e_machine_in_either_byte_order() {
        assert_eq!(machine(&header(1, [62, 0])), Some(EM_X86_64));
        assert_eq!(machine(&header(1, [183, 0])), Some(EM_AARCH64));
        assert_eq!(machine(&header(2, [0, 40])), Some(EM_ARM));
        assert_eq!(machine(&header(3, [62, 0])), None);
        assert_eq!(machine(b"#!/bin/sh\necho usepod-edge 9.9.9\n"), None);
        assert_eq!(machine(&header(1, [62, 0])[..19]), None);
    }

    #[test]
    fn this_test_binary_is_for_here() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(machine(&me), Some(HERE));
        assert_ne!(HERE, 0, "an architecture without a machine number");
        assert_eq!(name(EM_AARCH64), "aarch64");
        assert_eq!(name(7), "ELF machine 7");
    }
}
