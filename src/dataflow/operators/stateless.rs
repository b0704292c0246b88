//! Operators without state. Each is linear: it maps every row independently and keeps the
//! row's diff, so applying it to a stream of changes gives the changes of applying it to the
//! contents.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::dataflow::{Changes, EventTime};
use crate::error::{Result, WeirError};

/// Rebuilds a batch under `schema`, casting columns whose type differs (DataFusion may type an
/// expression slightly differently from the plan's schema, e.g. a timezone). Operator schemas
/// are all-nullable (see [`super::arrow_schema`]), so no nullability check can fail here.
pub fn conform(columns: Vec<ArrayRef>, schema: &SchemaRef, rows: usize) -> Result<RecordBatch> {
    let mut out = Vec::with_capacity(columns.len());
    for (c, f) in columns.into_iter().zip(schema.fields()) {
        out.push(if c.data_type() == f.data_type() { c } else { cast(&c, f.data_type())? });
    }
    let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), out, &options)?)
}

/// A leaf: the input relation's changes, under the schema the plan gave the scan.
pub struct InputOp {
    schema: SchemaRef,
}

impl InputOp {
    pub fn new(schema: SchemaRef) -> Self {
        InputOp { schema }
    }
}

impl Operator for InputOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let rows = conform(changes.rows.columns().to_vec(), &self.schema, changes.len())?;
        out.push(Changes::new(rows, changes.diffs));
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, _out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        Ok(Some(watermark))
    }
}

pub struct FilterOp {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOp {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        FilterOp { predicate }
    }
}

impl Operator for FilterOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let mask = self.predicate.evaluate(&changes.rows)?.into_array(changes.len())?;
        let mask = mask
            .as_boolean_opt()
            .ok_or_else(|| WeirError::internal("a filter predicate did not evaluate to booleans"))?;
        // NULL counts as false, as in WHERE.
        let kept = if mask.null_count() > 0 {
            changes.filter(&datafusion::arrow::compute::prep_null_mask_filter(mask))?
        } else {
            changes.filter(mask)?
        };
        if !kept.is_empty() {
            out.push(kept);
        }
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, _out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        Ok(Some(watermark))
    }
}

pub struct ProjectOp {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOp {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectOp { exprs, schema }
    }
}

impl Operator for ProjectOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let n = changes.len();
        let columns =
            self.exprs.iter().map(|e| e.evaluate(&changes.rows)?.into_array(n)).collect::<datafusion::error::Result<Vec<_>>>()?;
        out.push(Changes::new(conform(columns, &self.schema, n)?, changes.diffs));
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, _out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        Ok(Some(watermark))
    }
}

/// One output row per element of a list column (HOP's window starts); a NULL or empty list
/// gives no row, as DataFusion's unnest does by default.
pub struct UnnestOp {
    list_column: usize,
    dependency_indices: Vec<usize>,
    schema: SchemaRef,
}

impl UnnestOp {
    pub fn new(list_column: usize, dependency_indices: Vec<usize>, schema: SchemaRef) -> Self {
        UnnestOp { list_column, dependency_indices, schema }
    }
}

impl Operator for UnnestOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let list = changes.rows.column(self.list_column);
        let list = list
            .as_list_opt::<i32>()
            .ok_or_else(|| WeirError::internal("unnest of a column that is not a list"))?;
        let mut parent = Vec::with_capacity(list.values().len());
        let mut element = Vec::with_capacity(list.values().len());
        let offsets = list.value_offsets();
        for row in 0..list.len() {
            if list.is_null(row) {
                continue;
            }
            for e in offsets[row]..offsets[row + 1] {
                parent.push(row as u32);
                element.push(e as u32);
            }
        }
        let parent = UInt32Array::from(parent);
        let element = UInt32Array::from(element);
        let values = take(list.values().as_ref(), &element, None)?;
        let mut columns = Vec::with_capacity(self.dependency_indices.len());
        for &input in &self.dependency_indices {
            columns.push(if input == self.list_column {
                values.clone()
            } else {
                take(changes.rows.column(input).as_ref(), &parent, None)?
            });
        }
        let diffs = take(&changes.diffs, &parent, None)?;
        let diffs = diffs.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>().cloned().unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        let n = parent.len();
        if n > 0 {
            out.push(Changes::new(conform(columns, &self.schema, n)?, diffs));
        }
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, _out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        Ok(Some(watermark))
    }
}

/// `UNION ALL`: changes of every input, under the union's schema. Its watermark is the
/// minimum over inputs, known once every input has one.
pub struct UnionOp {
    schema: SchemaRef,
    watermarks: Vec<Option<EventTime>>,
    current: Option<EventTime>,
}

impl UnionOp {
    pub fn new(inputs: usize, schema: SchemaRef) -> Self {
        UnionOp { schema, watermarks: vec![None; inputs], current: None }
    }
}

impl Operator for UnionOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let rows = conform(changes.rows.columns().to_vec(), &self.schema, changes.len())?;
        out.push(Changes::new(rows, changes.diffs));
        Ok(())
    }

    fn on_watermark(&mut self, port: usize, watermark: EventTime, _out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        if let Some(w) = self.watermarks.get_mut(port) {
            *w = Some(watermark);
        }
        let min = self.watermarks.iter().try_fold(EventTime::MAX, |acc, w| w.map(|w| acc.min(w)));
        match min {
            Some(m) if self.current.is_none_or(|c| m > c) => {
                self.current = Some(m);
                Ok(Some(m))
            }
            _ => Ok(None),
        }
    }
}
