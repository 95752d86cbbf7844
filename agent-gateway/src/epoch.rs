//! The cluster epoch a certificate was issued in (SPEC B7). A restore or a recovery from a lost
//! majority starts a new epoch; every certificate the cluster's CA issues from then on names it
//! in its subject's organizational unit (`cluster epoch N`). The lost KMAs of a recovery still
//! hold certificates of the older epoch, and they are still a majority of the old
//! configuration: a drive that has once spoken to a KMA of the new epoch refuses them, and so
//! do the KMAs of the new epoch on their links.
//!
//! A certificate without the unit was issued before epochs existed: epoch 0, the epoch of a
//! cluster that was never restored or recovered.

use rustls::pki_types::CertificateDer;

/// How the organizational unit of an issued certificate's subject names its epoch.
const UNIT_PREFIX: &str = "cluster epoch ";

/// The organizational unit that names `epoch`, for the issuer.
pub fn unit_of(epoch: u32) -> String {
    format!("{UNIT_PREFIX}{epoch}")
}

/// The epoch a certificate names: 0 when it names none; `None` when it is not X.509 or names
/// an epoch that does not parse (the caller refuses such a certificate).
pub fn of_certificate(certificate: &CertificateDer<'_>) -> Option<u32> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let mut epoch = 0;
    for unit in parsed.subject().iter_organizational_unit() {
        if let Some(number) = unit.as_str().ok()?.strip_prefix(UNIT_PREFIX) {
            epoch = number.parse().ok()?;
        }
    }
    Some(epoch)
}

/// The epoch of the first certificate in `pem`, as [`of_certificate`].
pub fn of_pem(pem: &str) -> Option<u32> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    of_certificate(&der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(unit: Option<&str>) -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "kma-3");
        if let Some(unit) = unit {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, unit);
        }
        params.self_signed(&key).expect("signed").pem()
    }

    #[test]
    fn b7_a_certificate_names_its_epoch_or_none() {
        assert_eq!(of_pem(&certificate(Some(&unit_of(7)))), Some(7));
        assert_eq!(of_pem(&certificate(None)), Some(0), "issued before epochs: epoch 0");
        assert_eq!(of_pem(&certificate(Some("storage team"))), Some(0), "another unit");
        assert_eq!(of_pem(&certificate(Some("cluster epoch seven"))), None, "refused");
        assert_eq!(of_pem("not a certificate"), None);
    }
}
