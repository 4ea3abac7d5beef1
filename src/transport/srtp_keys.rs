//! Learns a connection's SRTP master keys: the outbound one for Parley's own media send path,
//! the inbound one for its own receive path of a viewer's RTCP.
//!
//! `rtc` 0.21 keeps a connection's SRTP contexts private and offers no keying-material export.
//! It does let each connection use its own crypto provider, and SRTP key derivation (RFC 3711
//! §4.3) is the only user of the provider's raw AES block operation. So each connection gets a
//! [`KeyTap`]: a provider that delegates everything to the default one and remembers the first
//! block encryption it performs. `rtc` builds the local (sending) context first, and that
//! context's first derivation is the SRTP encryption key (label 0, block 0), whose AES key is
//! the local master key and whose input block starts with the local master salt. The remote
//! (receiving) context comes next: the first block encryption under another key is its
//! derivation, with the remote master key and salt.
//!
//! The tap only records; it never changes what the stack computes. It never logs key material.

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher,
    StreamCipherAlgorithm,
};
use std::sync::{Arc, OnceLock};

/// The first AES-128 derivation a connection performed: its local SRTP master key and the
/// input block (master salt, label 0, counter 0).
#[derive(Clone, Copy)]
pub(crate) struct MasterKeys {
    pub(crate) key: [u8; 16],
    pub(crate) block: [u8; 16],
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeys(..)")
    }
}

/// A connection's master keys, once the DTLS handshake made them.
#[derive(Debug, Default)]
pub(crate) struct Tapped {
    local: OnceLock<MasterKeys>,
    remote: OnceLock<MasterKeys>,
}

impl Tapped {
    /// The sending context's keys.
    pub(crate) fn local(&self) -> Option<&MasterKeys> {
        self.local.get()
    }

    /// The receiving context's keys.
    pub(crate) fn remote(&self) -> Option<&MasterKeys> {
        self.remote.get()
    }
}

/// A per-connection crypto provider that remembers the SRTP master keys.
pub(crate) struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: TapCrypto,
}

struct TapCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    seen: Arc<Tapped>,
}

impl KeyTap {
    /// A tap over `inner`, and where the keys will appear after the DTLS handshake.
    pub(crate) fn new(inner: Arc<dyn RTCCryptoProvider>) -> (Arc<Self>, Arc<Tapped>) {
        let seen = Arc::new(Tapped::default());
        let tap = Self {
            inner: inner.clone(),
            crypto: TapCrypto {
                inner,
                seen: seen.clone(),
            },
        };
        (Arc::new(tap), seen)
    }
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl RTCCrypto for TapCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        if self.seen.remote.get().is_none() && algorithm == BlockCipherAlgorithm::Aes128 {
            if let (Ok(key), Ok(block)) = (<[u8; 16]>::try_from(key), <[u8; 16]>::try_from(&*block))
            {
                let keys = MasterKeys { key, block };
                match self.seen.local.get() {
                    None => {
                        let _ = self.seen.local.set(keys);
                    }
                    Some(local) if local.key != key => {
                        let _ = self.seen.remote.set(keys);
                    }
                    Some(_) => {}
                }
            }
        }
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

/// Keys, and a master key learnt the way a connection's tap learns it, for the tests of the
/// openers.
#[cfg(test)]
pub(crate) mod fixture {
    use super::{KeyTap, MasterKeys};
    use rtc::crypto::RTCCryptoProvider;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    /// This side's master key.
    pub const LOCAL_KEY: [u8; 16] = [0x11; 16];
    /// The client's master key.
    pub const REMOTE_KEY: [u8; 16] = [
        0x0d, 0xcd, 0x21, 0x3e, 0x4c, 0xbc, 0xf2, 0x8f, 0x01, 0x7f, 0x69, 0x94, 0x40, 0x1e, 0x28,
        0x89,
    ];
    /// The client's master salt.
    pub const REMOTE_SALT: [u8; 12] = [
        0x62, 0x77, 0x60, 0x38, 0xc0, 0x6d, 0xc9, 0x41, 0x9f, 0x6d, 0xd9, 0x43,
    ];

    /// The client's master key as a connection's tap learns it: the tap saw the stack build
    /// the local context, then the remote one.
    pub fn remote_keys() -> MasterKeys {
        let provider = rtc::crypto::default_provider().expect("provider");
        let (tap, seen) = KeyTap::new(provider);
        let profile = ProtectionProfile::AeadAes128Gcm;
        let _local = Context::new(&LOCAL_KEY, &[0x22; 12], profile, None, None, tap.crypto())
            .expect("local context");
        let _remote = Context::new(&REMOTE_KEY, &REMOTE_SALT, profile, None, None, tap.crypto())
            .expect("remote context");
        let remote = *seen.remote().expect("the remote derivation was seen");
        assert_eq!(remote.key, REMOTE_KEY);
        remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_first_aes128_block_of_two_keys_and_changes_nothing() {
        let inner = rtc::crypto::default_provider().expect("provider");
        let (tap, seen) = KeyTap::new(inner.clone());
        let key = [7u8; 16];
        let mut a = [1u8; 16];
        let mut b = [1u8; 16];
        tap.crypto()
            .block_encrypt(BlockCipherAlgorithm::Aes128, &key, &mut a)
            .expect("encrypt");
        inner
            .crypto()
            .block_encrypt(BlockCipherAlgorithm::Aes128, &key, &mut b)
            .expect("encrypt");
        assert_eq!(a, b, "the tap must not change results");
        let mut c = [2u8; 16];
        tap.crypto()
            .block_encrypt(BlockCipherAlgorithm::Aes128, &[9u8; 16], &mut c)
            .expect("encrypt");
        let got = seen.local().expect("recorded");
        assert_eq!(got.key, key);
        assert_eq!(got.block, [1u8; 16], "the input block, before encryption");
        let remote = seen.remote().expect("the next key's first block");
        assert_eq!((remote.key, remote.block), ([9u8; 16], [2u8; 16]));
    }
}
