//! Console output (what `RunResourceCommand` answers): paragraphs of text
//! and tables, built the same way by the service and by drivers.

use marketbridge_proto::provisioning::v1 as pb;

/// Plain text.
pub fn text(text: impl Into<String>) -> pb::TextSpan {
    pb::TextSpan {
        text: text.into(),
        ..Default::default()
    }
}

/// Bold text.
pub fn bold(text: impl Into<String>) -> pb::TextSpan {
    pb::TextSpan {
        text: text.into(),
        bold: true,
        ..Default::default()
    }
}

/// A paragraph of spans.
pub fn paragraph(spans: Vec<pb::TextSpan>) -> pb::OutputBlock {
    pb::OutputBlock {
        block: Some(pb::output_block::Block::Paragraph(pb::Paragraph { spans })),
    }
}

/// A paragraph saying something went wrong, in red.
pub fn failure(message: impl Into<String>) -> pb::OutputBlock {
    paragraph(vec![pb::TextSpan {
        text: message.into(),
        color: "red".to_owned(),
        ..Default::default()
    }])
}

/// A table of plain text.
pub fn table(header: Vec<String>, rows: Vec<Vec<String>>) -> pb::OutputBlock {
    pb::OutputBlock {
        block: Some(pb::output_block::Block::Table(pb::Table {
            header: header.into_iter().map(bold).collect(),
            rows: rows
                .into_iter()
                .map(|cells| pb::TableRow {
                    cells: cells.into_iter().map(text).collect(),
                })
                .collect(),
        })),
    }
}
