//! libdm's JSON report form (`--reportformat json`): one named list of objects, each mapping
//! the shown fields' ids to their texts.

use super::Report;

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Report {
    /// The buffered rows as a JSON report whose list is called `name` (printed even when
    /// empty, as libdm does); the rows are dropped.
    pub fn render_json(&mut self, name: &str) -> String {
        let mut out = format!("{{\n    \"report\": [\n        {{\n            \"{name}\": [\n");
        let shown: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.selected || self.shows_selected())
            .map(|r| {
                let kv: Vec<String> = self
                    .props
                    .iter()
                    .zip(&r.values)
                    .filter(|(p, _)| !p.hidden)
                    .map(|(p, v)| {
                        format!("{}:{}", json_str(self.def(p.field).id), json_str(v.text()))
                    })
                    .collect();
                format!("                {{{}}}", kv.join(", "))
            })
            .collect();
        out.push_str(&shown.join(",\n"));
        if !shown.is_empty() {
            out.push('\n');
        }
        out.push_str("            ]\n        }\n    ]\n}\n");
        self.rows.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::report::{FieldDef, Flags, Kind, Obj, Report, TypeDef, Value};

    static F: &[FieldDef] = &[
        FieldDef {
            ty: 1,
            kind: Kind::Str,
            heading: "Name",
            width: 4,
            id: "name",
            desc: "Name.",
        },
        FieldDef {
            ty: 1,
            kind: Kind::Num,
            heading: "N",
            width: 1,
            id: "n",
            desc: "N.",
        },
    ];
    static T: &[TypeDef] = &[TypeDef {
        id: 1,
        desc: "Thing",
        prefix: "thing_",
    }];

    struct R(&'static str, i64);
    impl Obj for R {
        fn value(&self, f: usize) -> Value {
            match f {
                0 => Value::Str(self.0.into()),
                _ => Value::num(self.1),
            }
        }
    }

    #[test]
    fn json_lists_rows_and_escapes() {
        let mut r = Report::new(F, T, 1, "name,n", "", Flags::default(), Some("n>1")).expect("r");
        r.object(&R("a\"b", 2), true);
        r.object(&R("skipped", 1), true);
        r.object(&R("c\\", 3), true);
        assert_eq!(
            r.render_json("thing"),
            "{\n    \"report\": [\n        {\n            \"thing\": [\n                \
             {\"name\":\"a\\\"b\", \"n\":\"2\"},\n                {\"name\":\"c\\\\\", \"n\":\"3\"}\n            \
             ]\n        }\n    ]\n}\n"
        );
        assert_eq!(
            r.render_json("thing"),
            "{\n    \"report\": [\n        {\n            \"thing\": [\n            ]\n        }\n    ]\n}\n"
        );
    }
}
