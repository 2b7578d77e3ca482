//! Text of X.509 name attributes, decoded by their ASN.1 string type (X.520 DirectoryString
//! and friends) instead of taking the bytes as UTF-8: a BMPString whose bytes happen to spell
//! `CAdmin` is `䍁摭楮`, as a CA's approval step would have shown it, never `CAdmin`.
//!
//! UTF8String, PrintableString, IA5String, VisibleString and NumericString (ASCII), BMPString
//! (UCS-2 as UTF-16BE, no surrogates) and UniversalString (UCS-4 as UTF-32BE) are decoded
//! strictly; any other type (TeletexString, whose T.61 repertoire has no faithful mapping,
//! GeneralString, ...) and any malformed value give nothing, never a lossy guess.

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1StringRef;

/// The text of `s`, or `None` when its type is not one read here or its bytes are not valid
/// for its type.
pub fn decode(s: &Asn1StringRef) -> Option<String> {
    // SAFETY: a valid ASN1_STRING for the call; only its type tag is read.
    let tag = unsafe { openssl_sys::ASN1_STRING_type(s.as_ptr()) };
    let bytes = s.as_slice();
    match tag {
        openssl_sys::V_ASN1_UTF8STRING => std::str::from_utf8(bytes).ok().map(str::to_owned),
        openssl_sys::V_ASN1_PRINTABLESTRING
        | openssl_sys::V_ASN1_IA5STRING
        | V_ASN1_VISIBLESTRING
        | V_ASN1_NUMERICSTRING => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned()),
        openssl_sys::V_ASN1_BMPSTRING => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|u| u16::from_be_bytes([u[0], u[1]]))
                .collect();
            // UCS-2: a surrogate is no character of its own
            if units.iter().any(|u| (0xD800..=0xDFFF).contains(u)) {
                return None;
            }
            String::from_utf16(&units).ok()
        }
        openssl_sys::V_ASN1_UNIVERSALSTRING => {
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

// ASN.1 universal tags openssl-sys does not name.
const V_ASN1_NUMERICSTRING: i32 = 18;
const V_ASN1_VISIBLESTRING: i32 = 26;

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::nid::Nid;
    use openssl::x509::X509Name;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        [&[tag, content.len() as u8][..], content].concat()
    }

    /// The text of a name whose one CN has ASN.1 tag `tag` and exactly `bytes`; `Err` when
    /// OpenSSL refuses to parse such a name at all (then no certificate can carry it).
    fn cn(tag: u8, bytes: &[u8]) -> Result<Option<String>, ()> {
        let cn_oid = [0x06, 0x03, 0x55, 0x04, 0x03];
        let atv = tlv(0x30, &[&cn_oid[..], &tlv(tag, bytes)].concat());
        let der = tlv(0x30, &tlv(0x31, &atv));
        let name = X509Name::from_der(&der).map_err(|_| ())?;
        let entry = name.entries_by_nid(Nid::COMMONNAME).next().unwrap();
        Ok(decode(entry.data()))
    }

    const UTF8: u8 = 12;
    const PRINTABLE: u8 = 19;
    const T61: u8 = 20;
    const IA5: u8 = 22;
    const UNIVERSAL: u8 = 28;
    const BMP: u8 = 30;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    fn utf32(s: &str) -> Vec<u8> {
        s.chars().flat_map(|c| (c as u32).to_be_bytes()).collect()
    }

    #[test]
    fn each_type_is_decoded_as_its_type() {
        let text = |tag, bytes: &[u8]| cn(tag, bytes).unwrap().unwrap();
        assert_eq!(text(UTF8, "Grüße".as_bytes()), "Grüße");
        assert_eq!(text(PRINTABLE, b"Cae-1"), "Cae-1");
        assert_eq!(text(IA5, b"Cae-1"), "Cae-1");
        assert_eq!(text(BMP, &utf16("Cbmp")), "Cbmp");
        assert_eq!(text(BMP, b"CAdmin"), "䍁摭楮");
        assert_eq!(text(UNIVERSAL, &utf32("Cuni")), "Cuni");
    }

    #[test]
    fn malformed_values_and_other_types_give_nothing() {
        // refused here, or by OpenSSL before (odd lengths, code points beyond U+10FFFF)
        for (tag, bytes) in [
            (UNIVERSAL, &b"CAdmin"[..]),
            (UNIVERSAL, b"CAdminXY"),
            (UNIVERSAL, &[0, 0, 0xD8, 0]),
            (BMP, b"CAdmin\0"),
            (BMP, &[0xD8, 0x00, 0xDC, 0x00]),
            (UTF8, &[0x43, 0xff]),
            (PRINTABLE, "Cä".as_bytes()),
            (IA5, &[0x43, 0x80]),
            (T61, b"Ct61"),
        ] {
            assert!(
                matches!(cn(tag, bytes), Err(()) | Ok(None)),
                "tag {tag} {bytes:?}: {:?}",
                cn(tag, bytes)
            );
        }
    }
}
