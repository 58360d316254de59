//! TCP_NODELAY on the gateway's PostgreSQL connections.
//!
//! sqlx 0.9.0 stopped setting TCP_NODELAY on its sockets (sqlx issue 4335;
//! fixed upstream after 0.9.0, not yet released) and offers no hook to
//! reach the socket. Without it, Nagle's algorithm holds a write while an
//! earlier small segment is unacknowledged, and PostgreSQL acknowledges
//! late (delayed ACK, 40 ms on Linux). Over TLS every statement larger than
//! one TLS record (16 KiB: an audit batch of a few turns) is several writes,
//! so each durable answer waited about 40 ms at concurrency 8 and above
//! (`bench/gateway.sh`). Hand-written because no crate reaches the socket
//! of an established sqlx connection: after each connect, every TCP socket
//! of this process whose peer is PostgreSQL's port gets the option; setting
//! it again on one that has it, or on another socket to that port, is
//! harmless. Remove once a sqlx release sets it itself.

use std::os::fd::RawFd;

/// Sets TCP_NODELAY on every TCP socket of this process connected to `port`;
/// returns how many sockets now have it. Linux only (reads `/proc/self/fd`);
/// elsewhere it does nothing.
pub fn set_on_connections_to(port: u16) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| peer_port(fd) == Some(port) && set_nodelay(fd))
        .count()
}

/// The peer's port of socket `fd`, if it is a connected IPv4/IPv6 socket.
fn peer_port(fd: RawFd) -> Option<u16> {
    // SAFETY: getpeername only writes up to `len` bytes into `addr`; an fd
    // that is not a socket, or closed meanwhile, makes it fail (checked).
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    // The port sits at the same offset, in network order, in both families.
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 = unsafe { &*(&raw const addr).cast::<libc::sockaddr_in>() };
            Some(u16::from_be(v4.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe { &*(&raw const addr).cast::<libc::sockaddr_in6>() };
            Some(u16::from_be(v6.sin6_port))
        }
        _ => None,
    }
}

/// Turns Nagle's algorithm off on `fd`; false if the call failed.
fn set_nodelay(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its size; a fd that is
    // no longer a TCP socket makes the call fail, which is reported.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sockets_to_the_port_get_nodelay_and_others_do_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to_port = [
            TcpStream::connect(("127.0.0.1", port)).unwrap(),
            TcpStream::connect(("127.0.0.1", port)).unwrap(),
        ];
        let elsewhere = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(to_port.iter().all(|s| !s.nodelay().unwrap()));

        assert!(set_on_connections_to(port) >= 2);

        assert!(to_port.iter().all(|s| s.nodelay().unwrap()));
        assert!(
            !elsewhere.nodelay().unwrap(),
            "a socket to another port is left alone"
        );
    }
}
