//! Content codings of the catalog and the MCP listings (ADR 0022): gzip and
//! zstd bodies computed once per catalog version off the request path
//! ([`cache`]), chosen per request by `Accept-Encoding` ([`Accept`]).
//!
//! - `GET /v1/tools` (whole, `?server=`): zstd, gzip, identity. Each
//!   representation has its own strong ETag (`"V-H"`, `"V-H-gzip"`,
//!   `"V-H-zstd"`); `If-None-Match` with the tag of any current
//!   representation the request accepts gives 304 with that tag.
//! - `/mcp` `tools/list`: gzip, identity. The envelope carries the request's
//!   id and `ttlMs`, so only the tools array is compressed once; each answer
//!   is one gzip member spliced from the cached deflate piece and the
//!   envelope in stored blocks ([`codec::gzip_splice`]).
//!
//! A representation that is not ready yet is not waited for: the request
//! gets the next acceptable one that is, identity last.

pub mod cache;
pub mod codec;

use std::convert::Infallible;
use std::sync::Arc;

use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::HttpResponse;
use bytes::Bytes;

pub use cache::{Compressor, Gate};

use crate::gateway::listing::Listing;

/// A content coding this service can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Gzip,
    Zstd,
}

impl Coding {
    /// The `Content-Encoding` token (None for identity: no header).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Zstd => Some("zstd"),
        }
    }

    /// The strong ETag of this representation, from the identity one
    /// (`"7-abc"` gives `"7-abc-gzip"`): distinct per coding, as RFC 9110
    /// 8.8.3 asks of content-coded representations.
    pub fn etag(self, identity: &str) -> String {
        match (self.token(), identity.strip_suffix('"')) {
            (Some(token), Some(open)) => format!("{open}-{token}\""),
            _ => identity.to_owned(),
        }
    }

    /// Server preference among equally acceptable codings: the smallest
    /// body first.
    fn rank(self) -> u8 {
        match self {
            Coding::Zstd => 0,
            Coding::Gzip => 1,
            Coding::Identity => 2,
        }
    }
}

/// What a route can answer with: every route has identity.
pub const CATALOG_CODINGS: &[Coding] = &[Coding::Zstd, Coding::Gzip, Coding::Identity];
/// `/mcp` listings: gzip only (see ADR 0022 for why not zstd).
pub const LISTING_CODINGS: &[Coding] = &[Coding::Gzip, Coding::Identity];
pub const IDENTITY_ONLY: &[Coding] = &[Coding::Identity];

/// The `Vary` every answer of a negotiated route carries.
pub fn vary() -> (header::HeaderName, HeaderValue) {
    (header::VARY, HeaderValue::from_static("accept-encoding"))
}

/// A qvalue in thousandths (RFC 9110 12.4.2: at most three decimals).
type Q = u16;

/// A parsed `Accept-Encoding` (RFC 9110 12.5.3), as far as our codings go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// No header at all: "any coding is acceptable", but identity is what
    /// a client that did not ask understands for sure.
    absent: bool,
    gzip: Option<Q>,
    zstd: Option<Q>,
    identity: Option<Q>,
    star: Option<Q>,
}

/// No coding the route has is acceptable (`identity;q=0` or `*;q=0`, and
/// none of the others): 406.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAcceptable;

impl Accept {
    /// Every `Accept-Encoding` line of the request, as one list.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut lines = headers.get_all(header::ACCEPT_ENCODING).peekable();
        if lines.peek().is_none() {
            return Self {
                absent: true,
                ..Self::default()
            };
        }
        let mut accept = Self::default();
        for line in lines {
            // A value that is not visible ASCII says nothing we can read.
            if let Ok(text) = line.to_str() {
                accept.add(text);
            }
        }
        accept
    }

    /// Parses one header value (tests call it directly).
    pub fn parse(value: &str) -> Self {
        let mut accept = Self::default();
        accept.add(value);
        accept
    }

    fn add(&mut self, value: &str) {
        for element in value.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            if coding.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                let Some((name, v)) = param.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim());
                }
            }
            // An element with a malformed qvalue is left out, as if absent.
            let Some(q) = q else { continue };
            let slot =
                if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut self.gzip
                } else if coding.eq_ignore_ascii_case("zstd") {
                    &mut self.zstd
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut self.identity
                } else if coding == "*" {
                    &mut self.star
                } else {
                    continue;
                };
            // Listed twice (`gzip` and `x-gzip`): the most favourable wins.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }

    /// The weight of `coding`: 0 is "not acceptable"; an unlisted identity
    /// is acceptable but below any listed coding (weight 1), so
    /// `gzip;q=0.1` still beats it.
    fn weight(&self, coding: Coding) -> u32 {
        let listed = match coding {
            Coding::Gzip => self.gzip,
            Coding::Zstd => self.zstd,
            Coding::Identity => self.identity,
        };
        if self.absent {
            return u32::from(coding == Coding::Identity);
        }
        match (listed.or(self.star), coding) {
            (Some(q), _) => u32::from(q) * 2,
            (None, Coding::Identity) => 1,
            (None, _) => 0,
        }
    }

    /// The acceptable codings among `offered`, the client's favourite
    /// first (ties: zstd, gzip, identity); empty: nothing is acceptable.
    pub fn ranked(&self, offered: &[Coding]) -> Vec<Coding> {
        let mut ranked: Vec<(u32, Coding)> = offered
            .iter()
            .map(|&c| (self.weight(c), c))
            .filter(|(w, _)| *w > 0)
            .collect();
        ranked.sort_by_key(|&(w, c)| (std::cmp::Reverse(w), c.rank()));
        ranked.into_iter().map(|(_, c)| c).collect()
    }

    /// The coding to answer with, given which ones are `ready` now: the
    /// favourite that is ready; identity when none is (a coding still
    /// being computed is never waited for, even by a client that refused
    /// identity: it is there a moment later).
    pub fn choose(
        &self,
        offered: &[Coding],
        mut ready: impl FnMut(Coding) -> bool,
    ) -> Result<Coding, NotAcceptable> {
        let ranked = self.ranked(offered);
        if ranked.is_empty() {
            return Err(NotAcceptable);
        }
        Ok(ranked
            .into_iter()
            .find(|&c| c == Coding::Identity || ready(c))
            .unwrap_or(Coding::Identity))
    }
}

impl NotAcceptable {
    /// What the client can do about it.
    pub fn hint(&self) -> &'static str {
        "Accept-Encoding accepts none of the codings this answer has (gzip, identity). Hint: allow identity (drop `identity;q=0` and `*;q=0`) or accept gzip"
    }
}

/// An `/mcp` `tools/list` answer: the envelope made for this request
/// around the listing's pre-serialized tools array.
pub struct Answer {
    pub prefix: Vec<u8>,
    /// The tools array's inside, as the listing holds it.
    pub chunks: Vec<Bytes>,
    pub suffix: Vec<u8>,
}

/// The answer to `tools/list` in the coding the request takes: gzip is
/// one member spliced from the listing's piece, compressed once
/// ([`codec::gzip_splice`]); identity (or gzip not ready yet) is the
/// pieces as they are. `Vary: Accept-Encoding` either way.
pub fn listing_answer(
    compressor: &Compressor,
    headers: &HeaderMap,
    listing: &Arc<Listing>,
    page: Option<usize>,
    answer: Answer,
) -> Result<HttpResponse, NotAcceptable> {
    let offered = if listing.tool_count > 0 {
        LISTING_CODINGS
    } else {
        IDENTITY_ONLY
    };
    let mut piece = None;
    let coding = Accept::from_headers(headers).choose(offered, |_| {
        piece = compressor.listing_piece(listing, page, true);
        piece.is_some()
    })?;
    let mut res = HttpResponse::Ok();
    res.content_type("application/json").insert_header(vary());
    let Answer {
        prefix,
        chunks,
        suffix,
    } = answer;
    let pieces = match (coding, piece) {
        (Coding::Gzip, Some(piece)) => {
            res.insert_header((header::CONTENT_ENCODING, "gzip"));
            codec::gzip_splice(&prefix, &piece, &suffix)
        }
        _ => {
            let mut pieces = Vec::with_capacity(chunks.len() + 2);
            pieces.push(Bytes::from(prefix));
            pieces.extend(chunks);
            pieces.push(Bytes::from(suffix));
            pieces
        }
    };
    Ok(res.body(sized_body(pieces)))
}

/// How much of a large body goes to actix at a time ([`in_slices`]).
const SLICE: usize = 64 * 1024;

/// A large body handed to actix in slices of [`SLICE`] (views of `body`,
/// no copy). actix copies each chunk of a body into the connection's write
/// buffer whole: one 21 MB chunk (`/metrics` at 10k servers) would cost a
/// second 21 MB for as long as it is being sent.
pub fn in_slices(body: Bytes) -> BoxBody {
    if body.len() <= SLICE {
        return BoxBody::new(body);
    }
    let pieces = (0..body.len())
        .step_by(SLICE)
        .map(|at| body.slice(at..(at + SLICE).min(body.len())))
        .collect();
    sized_body(pieces)
}

/// Pieces as one sized body (no copy).
pub fn sized_body(pieces: Vec<Bytes>) -> BoxBody {
    let len: usize = pieces.iter().map(Bytes::len).sum();
    BoxBody::new(SizedStream::new(
        len as u64,
        futures_util::stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)),
    ))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths; None if malformed.
fn parse_q(v: &str) -> Option<Q> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: Q = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The representation an `If-None-Match` designates, if any: the best
/// ranked acceptable coding (ready or not: a 304 has no body) whose ETag
/// is listed. RFC 9110 13.1.2 compares with the selected representation;
/// selecting the one the client (or a cache) already holds, when the
/// request accepts it, is a selection proactive negotiation may make, and
/// the 304 then names it (15.4.5).
pub fn not_modified(
    headers: &HeaderMap,
    identity_etag: &str,
    accept: &Accept,
    offered: &[Coding],
) -> Option<(Coding, String)> {
    if !headers.contains_key(header::IF_NONE_MATCH) {
        return None;
    }
    accept
        .ranked(offered)
        .into_iter()
        .map(|c| (c, c.etag(identity_etag)))
        .find(|(_, etag)| crate::api::tools::if_none_match(headers, etag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn ranked(value: &str) -> Vec<Coding> {
        Accept::parse(value).ranked(CATALOG_CODINGS)
    }

    /// A large body goes out in slices that are views of it, in order,
    /// with its whole length; a small one as it is.
    #[actix_web::test]
    async fn a_large_body_is_sent_in_slices_of_itself() {
        use actix_web::body::{BodySize, MessageBody};
        let body = Bytes::from((0..(SLICE * 2 + 5)).map(|i| i as u8).collect::<Vec<u8>>());
        let sliced = in_slices(body.clone());
        assert_eq!(sliced.size(), BodySize::Sized(body.len() as u64));
        let mut sliced = std::pin::pin!(sliced);
        let mut pieces = Vec::new();
        while let Some(piece) = std::future::poll_fn(|cx| sliced.as_mut().poll_next(cx)).await {
            pieces.push(piece.unwrap());
        }
        assert_eq!(
            pieces.iter().map(Bytes::len).collect::<Vec<_>>(),
            [SLICE, SLICE, 5]
        );
        assert_eq!(pieces.concat(), body.as_ref());
        assert_eq!(
            pieces[1].as_ptr(),
            body[SLICE..].as_ptr(),
            "a view, not a copy"
        );
        let small = in_slices(Bytes::from_static(b"{}"));
        assert_eq!(small.size(), BodySize::Sized(2));
    }

    #[test]
    fn no_header_means_identity() {
        let accept = Accept::from_headers(&HeaderMap::new());
        assert_eq!(accept.ranked(CATALOG_CODINGS), [Identity]);
        assert_eq!(accept.choose(CATALOG_CODINGS, |_| true), Ok(Identity));
    }

    #[test]
    fn an_empty_header_means_identity_only() {
        assert_eq!(ranked(""), [Identity]);
        assert_eq!(ranked(" , "), [Identity]);
    }

    #[test]
    fn equal_qvalues_prefer_the_smaller_body() {
        assert_eq!(ranked("gzip, zstd"), [Zstd, Gzip, Identity]);
        assert_eq!(ranked("gzip, deflate, br"), [Gzip, Identity]);
        assert_eq!(ranked("GZIP"), [Gzip, Identity]);
        assert_eq!(ranked("x-gzip"), [Gzip, Identity]);
    }

    #[test]
    fn qvalues_order_the_codings() {
        assert_eq!(ranked("zstd;q=0.5, gzip"), [Gzip, Zstd, Identity]);
        assert_eq!(ranked("zstd;q=0.5, gzip;q=0.501"), [Gzip, Zstd, Identity]);
        assert_eq!(ranked("gzip;q=0.1"), [Gzip, Identity]);
        assert_eq!(ranked("gzip;q=0.5, identity"), [Identity, Gzip]);
        assert_eq!(
            ranked("gzip ; Q = 0.5 , zstd;level=3"),
            [Zstd, Gzip, Identity]
        );
        assert_eq!(ranked("gzip;q=1.000"), [Gzip, Identity]);
    }

    #[test]
    fn q_zero_excludes() {
        assert_eq!(ranked("gzip;q=0, zstd"), [Zstd, Identity]);
        assert_eq!(ranked("gzip;q=0.000"), [Identity]);
        assert_eq!(ranked("gzip, identity;q=0"), [Gzip]);
        // Listed twice: the favourable entry wins.
        assert_eq!(ranked("gzip;q=0, x-gzip"), [Gzip, Identity]);
    }

    #[test]
    fn the_wildcard_covers_what_is_not_listed() {
        assert_eq!(ranked("*"), [Zstd, Gzip, Identity]);
        assert_eq!(ranked("gzip;q=0, *"), [Zstd, Identity]);
        assert_eq!(ranked("*;q=0.5, gzip"), [Gzip, Zstd, Identity]);
        // `*;q=0` refuses identity too, unless identity is listed.
        assert_eq!(ranked("gzip, *;q=0"), [Gzip]);
        assert_eq!(ranked("gzip, identity, *;q=0"), [Gzip, Identity]);
        assert_eq!(ranked("*;q=0"), Vec::<Coding>::new());
    }

    #[test]
    fn malformed_qvalues_drop_their_element() {
        for bad in ["q=2", "q=1.5", "q=0.1234", "q=abc", "q=", "q=-1", "q=.5"] {
            assert_eq!(
                ranked(&format!("zstd;{bad}, gzip")),
                [Gzip, Identity],
                "{bad}"
            );
        }
    }

    #[test]
    fn nothing_acceptable_is_not_acceptable() {
        assert_eq!(
            Accept::parse("identity;q=0").choose(CATALOG_CODINGS, |_| true),
            Err(NotAcceptable)
        );
        assert_eq!(
            Accept::parse("br, identity;q=0").choose(CATALOG_CODINGS, |_| true),
            Err(NotAcceptable)
        );
        assert_eq!(
            Accept::parse("zstd, identity;q=0").choose(LISTING_CODINGS, |_| true),
            Err(NotAcceptable)
        );
        assert_eq!(
            Accept::parse("gzip, identity;q=0").choose(IDENTITY_ONLY, |_| true),
            Err(NotAcceptable)
        );
    }

    #[test]
    fn a_coding_not_ready_falls_back_without_waiting() {
        let accept = Accept::parse("zstd, gzip");
        assert_eq!(accept.choose(CATALOG_CODINGS, |c| c == Gzip), Ok(Gzip));
        assert_eq!(accept.choose(CATALOG_CODINGS, |_| false), Ok(Identity));
        // Even when identity was refused: a pending body is not waited for.
        let strict = Accept::parse("gzip, identity;q=0");
        assert_eq!(strict.choose(CATALOG_CODINGS, |_| false), Ok(Identity));
        assert_eq!(strict.choose(CATALOG_CODINGS, |_| true), Ok(Gzip));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0.5"),
        );
        headers.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("zstd;q=0.2"),
        );
        let accept = Accept::from_headers(&headers);
        assert_eq!(accept.ranked(CATALOG_CODINGS), [Gzip, Zstd, Identity]);
    }

    #[test]
    fn etags_differ_per_coding() {
        let tag = "\"7-00000000deadbeef\"";
        assert_eq!(Identity.etag(tag), tag);
        assert_eq!(Gzip.etag(tag), "\"7-00000000deadbeef-gzip\"");
        assert_eq!(Zstd.etag(tag), "\"7-00000000deadbeef-zstd\"");
    }

    #[test]
    fn if_none_match_picks_an_acceptable_representation_it_names() {
        let tag = "\"7-00000000deadbeef\"";
        let inm = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            h
        };
        let gzip = Accept::parse("gzip");
        // The identity tag, from a client that accepts gzip and identity.
        assert_eq!(
            not_modified(&inm(tag), tag, &gzip, CATALOG_CODINGS),
            Some((Identity, tag.to_owned()))
        );
        // Its own gzip tag, weak or strong.
        let gz = Gzip.etag(tag);
        assert_eq!(
            not_modified(&inm(&format!("W/{gz}")), tag, &gzip, CATALOG_CODINGS),
            Some((Gzip, gz.clone()))
        );
        // A cache holding both asks with both: its favourite is named.
        let both = format!("{tag}, {gz}");
        assert_eq!(
            not_modified(&inm(&both), tag, &gzip, CATALOG_CODINGS),
            Some((Gzip, gz.clone()))
        );
        // A zstd tag is no use to a client that does not accept zstd.
        let zs = Zstd.etag(tag);
        assert_eq!(not_modified(&inm(&zs), tag, &gzip, CATALOG_CODINGS), None);
        // Identity refused: the identity tag does not match.
        let strict = Accept::parse("gzip, identity;q=0");
        assert_eq!(not_modified(&inm(tag), tag, &strict, CATALOG_CODINGS), None);
        // `*`: the favourite.
        assert_eq!(
            not_modified(&inm("*"), tag, &gzip, CATALOG_CODINGS),
            Some((Gzip, gz))
        );
        // Another version's tags never match.
        let old = "\"6-00000000deadbeef\"";
        let old_gz = Gzip.etag(old);
        assert_eq!(
            not_modified(
                &inm(&format!("{old}, {old_gz}")),
                tag,
                &gzip,
                CATALOG_CODINGS
            ),
            None
        );
        assert_eq!(
            not_modified(&HeaderMap::new(), tag, &gzip, CATALOG_CODINGS),
            None
        );
    }
}
