//! The ready queries of `docs/bi.md`, compiled in: the demo prints them and the tests check
//! their answers, so the documented SQL is the SQL that runs.

const BI: &str = include_str!("../../docs/bi.md");

/// The SQL of the query marked `<!-- query: NAME -->` in docs/bi.md.
pub fn bi_query(name: &str) -> Option<&'static str> {
    let marker = format!("<!-- query: {name} -->");
    let rest = &BI[BI.find(&marker)? + marker.len()..];
    let start = rest.find("```sql\n")? + "```sql\n".len();
    let end = start + rest[start..].find("```")?;
    Some(&rest[start..end])
}
