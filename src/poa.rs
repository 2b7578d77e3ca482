//! TEMPORARY STUB (replaced by the poa-rewrite branch)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    TowardLocal,
    AwayFromLocal,
}
pub fn encoding_of(_content_type: &str) -> Option<Encoding> {
    None
}
pub struct PoaMap;
impl PoaMap {
    pub fn new(_routes: &[(&str, &str)]) -> Result<PoaMap, String> {
        Ok(PoaMap)
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn rewrite(&self, _body: &[u8], _e: Encoding, _d: Direction) -> Option<(Vec<u8>, usize)> {
        None
    }
}
