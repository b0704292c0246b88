//! Checkpoint parts as Arrow IPC files: what operators and contents already are (record
//! batches), readable by any Arrow tool when a checkpoint needs inspecting.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;

use crate::error::{Result, SqlState, WeirError};

/// `batches` (of `schema`) as one IPC file.
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Bytes> {
    let mut writer = FileWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(Bytes::from(writer.into_inner()?))
}

/// The schema and batches of an IPC file written by [`encode`].
pub fn decode(bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let corrupt = |e: datafusion::arrow::error::ArrowError| WeirError::new(SqlState::DataCorrupted, format!("a checkpoint part does not read as Arrow IPC: {e}"));
    let reader = FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(corrupt)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(corrupt)?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn batches_round_trip() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![Some("a"), None])), Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let bytes = encode(&schema, &[batch.clone(), batch.slice(1, 1)]).unwrap();
        let (read_schema, batches) = decode(bytes.clone()).unwrap();
        assert_eq!(read_schema, schema);
        assert_eq!(batches, vec![batch.clone(), batch.slice(1, 1)]);
        assert_eq!(decode(bytes.slice(..bytes.len() - 8)).unwrap_err().state, SqlState::DataCorrupted);
    }
}
