//! `crl show`: the CRL as PEM, DER or a readable summary.

use std::io::Write;

use anyhow::Context;
use lanyard_identity::Serial;
use lanyard_proto::admin::v1 as pb;
use x509_parser::prelude::FromDer;

use super::{
    args::CrlFormat,
    commands::print_json,
    output::{table, time},
    views::{CrlView, RevokedSerialView},
};

pub(crate) fn show(crl: &pb::Crl, format: CrlFormat, json: bool) -> anyhow::Result<()> {
    match format {
        CrlFormat::Pem => {
            print!("{}", lanyard_ca::pem_block("X509 CRL", &crl.der));
            Ok(())
        }
        CrlFormat::Der => {
            std::io::stdout()
                .write_all(&crl.der)
                .context("writing the CRL to stdout")?;
            Ok(())
        }
        CrlFormat::Text => {
            let (_, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.der)
                    .map_err(|e| anyhow::anyhow!("the server's CRL does not parse: {e}"))?;
            let view = CrlView {
                crl_number: crl.crl_number,
                issuer: parsed.issuer().to_string(),
                this_update: time(parsed.last_update().timestamp()),
                next_update: parsed
                    .next_update()
                    .map(|t| time(t.timestamp()))
                    .unwrap_or_default(),
                revoked: parsed
                    .iter_revoked_certificates()
                    .map(|r| RevokedSerialView {
                        serial: Serial::from_bytes(r.raw_serial()).into_string(),
                        revoked_at: time(r.revocation_date.timestamp()),
                        reason: r
                            .reason_code()
                            .map(|(_, code)| reason_name(code.0))
                            .unwrap_or("unspecified")
                            .to_owned(),
                    })
                    .collect(),
            };
            if json {
                return print_json(&view);
            }
            println!("CRL number   {}", view.crl_number);
            println!("Issuer       {}", view.issuer);
            println!("This update  {}", view.this_update);
            println!("Next update  {}", view.next_update);
            println!("Revoked      {}", view.revoked.len());
            if !view.revoked.is_empty() {
                let rows: Vec<Vec<String>> = view
                    .revoked
                    .into_iter()
                    .map(|r| vec![r.serial, r.revoked_at, r.reason])
                    .collect();
                println!("{}", table(&["SERIAL", "REVOKED AT", "REASON"], &rows));
            }
            Ok(())
        }
    }
}

/// RFC 5280 reason codes by the names `svid revoke --reason` accepts.
fn reason_name(code: u8) -> &'static str {
    match code {
        1 => "key-compromise",
        2 => "ca-compromise",
        3 => "affiliation-changed",
        4 => "superseded",
        5 => "cessation-of-operation",
        6 => "certificate-hold",
        8 => "remove-from-crl",
        9 => "privilege-withdrawn",
        10 => "aa-compromise",
        _ => "unspecified",
    }
}
