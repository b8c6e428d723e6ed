//! The cluster's certificates: one CA per cluster, and node certificates it signs.
//!
//! Every process of a cluster (coordinator, workers, clients) presents a certificate signed by
//! the cluster CA and accepts only peers that do: mutual TLS, so that a process without the
//! cluster's certificate is refused at the handshake. Node certificates all carry the DNS name
//! [`SERVER_NAME`], which peers use as the TLS server name, so that nodes can be addressed by any
//! IP without a certificate per address.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use embtune_protocol::wire::SERVER_NAME;

use crate::TransportError;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";

/// What a process needs to join a cluster: the CA to trust and its own certificate and key.
pub struct Identity {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { ca: self.ca.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "embtune cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    p
}

fn rc(e: rcgen::Error) -> TransportError {
    TransportError::Certs(e.to_string())
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TransportError> {
    std::fs::write(path, text).map_err(|e| TransportError::Certs(format!("writing {}: {e}", path.display())))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

/// Creates a cluster CA and a node certificate in `dir`. Refuses to overwrite an existing CA,
/// which would lock every node out of the cluster.
pub fn init_cluster(dir: &Path) -> Result<(), TransportError> {
    std::fs::create_dir_all(dir).map_err(|e| TransportError::Certs(format!("creating {}: {e}", dir.display())))?;
    if dir.join(CA_KEY).exists() {
        return Err(TransportError::Certs(format!(
            "{} already holds a cluster CA; use it, or remove it to start a new cluster",
            dir.display()
        )));
    }
    let key = KeyPair::generate().map_err(rc)?;
    let cert = ca_params().self_signed(&key).map_err(rc)?;
    write(&dir.join(CA_CERT), &cert.pem(), false)?;
    write(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
    issue(dir, "node", &dir.join(NODE_CERT), &dir.join(NODE_KEY))
}

/// Issues a node certificate signed by the CA in `dir`, written to `cert` and `key`.
pub fn issue(dir: &Path, name: &str, cert: &Path, key: &Path) -> Result<(), TransportError> {
    let ca_key_pem = std::fs::read_to_string(dir.join(CA_KEY))
        .map_err(|e| TransportError::Certs(format!("reading the CA key in {}: {e}", dir.display())))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(rc)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut p = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(rc)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("embtune {name}"));
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let node_key = KeyPair::generate().map_err(rc)?;
    let node = p.signed_by(&node_key, &issuer).map_err(rc)?;
    write(cert, &node.pem(), false)?;
    write(key, &node_key.serialize_pem(), true)
}

/// Loads the identity in `dir`: the CA and the node certificate (or `cert`/`key` if given).
pub fn load(dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<Identity, TransportError> {
    let missing = |p: &Path, e: &dyn std::fmt::Display| {
        TransportError::Certs(format!(
            "cannot read {}: {e}; create the cluster's certificates with `embtune cluster init --out {}`",
            p.display(),
            dir.display()
        ))
    };
    let ca_path = dir.join(CA_CERT);
    let ca = CertificateDer::from_pem_file(&ca_path).map_err(|e| missing(&ca_path, &e))?;
    let cert_path: PathBuf = cert.map_or_else(|| dir.join(NODE_CERT), Path::to_path_buf);
    let key_path: PathBuf = key.map_or_else(|| dir.join(NODE_KEY), Path::to_path_buf);
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| missing(&cert_path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| missing(&cert_path, &e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| missing(&key_path, &e))?;
    Ok(Identity { ca, chain, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_load() {
        let dir = tempfile::tempdir().unwrap();
        init_cluster(dir.path()).unwrap();
        let id = load(dir.path(), None, None).unwrap();
        assert_eq!(id.chain.len(), 1);
        // A second CA in the same place would orphan every node.
        assert!(init_cluster(dir.path()).unwrap_err().to_string().contains("already holds"));
        let (c, k) = (dir.path().join("w1.crt"), dir.path().join("w1.key"));
        issue(dir.path(), "w1", &c, &k).unwrap();
        load(dir.path(), Some(&c), Some(&k)).unwrap();
    }

    #[test]
    fn missing_files_say_how_to_create_them() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), None, None).err().unwrap().to_string();
        assert!(err.contains("embtune cluster init"), "{err}");
    }
}
