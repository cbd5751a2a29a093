//! Compaction: a snapshot and the update log after it, folded into one
//! snapshot. Pure and synchronous; the server runs it off the relay path.

use crate::doc::{ApplyError, DocState, LoadReport};

/// Folds `snapshot` and `updates` into one Yjs v1 update holding the whole
/// document. Rows that do not decode are skipped and counted in the report.
pub fn compact<'a>(
    snapshot: Option<&'a [u8]>,
    updates: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(Vec<u8>, LoadReport), ApplyError> {
    let (state, report) = DocState::load(snapshot, updates)?;
    Ok((state.encode_state(), report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, Text, Transact, Update};

    #[test]
    fn compacted_snapshot_equals_the_log() {
        let client = Doc::new();
        let text = client.get_or_insert_text("t");
        let mut log = Vec::new();
        for word in ["alpha ", "beta ", "gamma"] {
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 0, word);
            log.push(txn.encode_update_v1());
        }
        let (first, _) = compact(None, log[..2].iter().map(Vec::as_slice)).expect("compacts");
        let (all, report) =
            compact(Some(&first), log[2..].iter().map(Vec::as_slice)).expect("compacts");
        assert_eq!(report.skipped, 0);
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&all).expect("decodes"))
            .expect("applies");
        let expected = text.get_string(&client.transact());
        assert_eq!(
            doc.get_or_insert_text("t").get_string(&doc.transact()),
            expected
        );
    }
}
