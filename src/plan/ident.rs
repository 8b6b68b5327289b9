//! SQL identifiers written outside the SQL body (header keys, expectation rules), read with the
//! same rules DataFusion applies to the model SQL: an unquoted identifier folds to lower case,
//! a `"Quoted"` one keeps its case (and `""` inside quotes is one `"`).
//!
//! Parsing goes through the same sqlparser tokenizer and DataFusion's own
//! [`IdentNormalizer`], so a column name means the same thing in a rule as in the SELECT.

use datafusion::sql::planner::IdentNormalizer;
use datafusion::sql::sqlparser::ast::Ident;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// Parses `text` with `f` and requires that nothing follows.
fn parse_all<T>(
    text: &str,
    f: impl FnOnce(&mut Parser<'_>) -> Result<T, ParserError>,
) -> Option<T> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).ok()?;
    let value = f(&mut parser).ok()?;
    (parser.peek_token().token == Token::EOF).then_some(value)
}

/// One identifier token; a single-quoted string is a literal, not a name.
fn identifier(parser: &mut Parser<'_>) -> Result<Ident, ParserError> {
    let ident = parser.parse_identifier()?;
    if ident.quote_style == Some('\'') {
        return Err(ParserError::ParserError(
            "a quoted string is not a column name".into(),
        ));
    }
    Ok(ident)
}

fn normalize(ident: Ident) -> String {
    IdentNormalizer::default().normalize(ident)
}

/// One identifier (`carrier_id`, `CarrierID` → `carrierid`, `"CarrierID"` → `CarrierID`), or
/// `None` when `text` is not exactly one identifier.
pub fn one(text: &str) -> Option<String> {
    parse_all(text, identifier).map(normalize)
}

/// A comma-separated list of identifiers (`a, "B"`), each normalized; `None` when `text` is
/// anything else.
pub fn list(text: &str) -> Option<Vec<String>> {
    parse_all(text, |p| p.parse_comma_separated(identifier))
        .map(|ids| ids.into_iter().map(normalize).collect())
}

/// One item of a list of [`calls`]: a column, optionally inside a transform call with an
/// optional leading integer argument (`region`, `day(ship_date)`, `bucket(16, "CustomerID")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The function name, lower case (`None` for a bare column).
    pub function: Option<String>,
    /// The integer argument before the column (`16` in `bucket(16, c)`).
    pub argument: Option<u64>,
    /// The column, normalized.
    pub column: String,
}

/// A comma-separated list of columns, each bare or inside a call (`a, day(b), bucket(16, "C")`);
/// `None` when `text` is anything else. Function names are unquoted words and fold to lower
/// case; the column follows identifier rules.
pub fn calls(text: &str) -> Option<Vec<Call>> {
    parse_all(text, |p| {
        p.parse_comma_separated(|p| {
            let first = identifier(p)?;
            if !p.consume_token(&Token::LParen) {
                return Ok(Call {
                    function: None,
                    argument: None,
                    column: normalize(first),
                });
            }
            if first.quote_style.is_some() {
                return Err(ParserError::ParserError(
                    "a function name is not quoted".into(),
                ));
            }
            let argument = match p.peek_token().token {
                Token::Number(n, _) => {
                    p.next_token();
                    let n = n.parse::<u64>().map_err(|e| {
                        ParserError::ParserError(format!("not a whole number: {e}"))
                    })?;
                    p.expect_token(&Token::Comma)?;
                    Some(n)
                }
                _ => None,
            };
            let column = normalize(identifier(p)?);
            p.expect_token(&Token::RParen)?;
            Ok(Call {
                function: Some(first.value.to_lowercase()),
                argument,
                column,
            })
        })
    })
}

/// A dotted name (`silver.customers."CustomerID"`), each part normalized; `None` when `text` is
/// anything else.
pub fn path(text: &str) -> Option<Vec<String>> {
    parse_all(text, |p| {
        let mut parts = vec![identifier(p)?];
        while p.consume_token(&Token::Period) {
            parts.push(identifier(p)?);
        }
        Ok(parts)
    })
    .map(|ids| ids.into_iter().map(normalize).collect())
}

/// A hint for a column `name` that is missing only because of its case: unquoted identifiers
/// fold to lower case, so a column `Name` must be written `"Name"`. `None` when no column of
/// `columns` differs from `name` by case alone.
pub fn case_hint<'a>(name: &str, columns: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    let found = columns
        .into_iter()
        .find(|c| *c != name && c.to_lowercase() == lower)?;
    Some(format!(
        "the column is `{found}`: names written without double quotes fold to lower case, so write {} (in double quotes) to refer to it",
        quoted(found)
    ))
}

/// `message` (DataFusion's text of `e`) with [`case_hint`] added when `e` is a missing-column
/// error (`No field named …`) and a column of the same name in another case exists. DataFusion's
/// own note about case, which suggests a session setting Smelter does not expose, is dropped.
pub fn with_case_hint(e: &datafusion::error::DataFusionError, message: String) -> String {
    use datafusion::common::SchemaError;
    use datafusion::error::DataFusionError;
    let DataFusionError::SchemaError(schema_error, _) = e.find_root() else {
        return message;
    };
    let SchemaError::FieldNotFound {
        field,
        valid_fields,
    } = schema_error.as_ref()
    else {
        return message;
    };
    let Some(hint) = case_hint(&field.name, valid_fields.iter().map(|c| c.name.as_str())) else {
        return message;
    };
    const NOTE: &str = ". Column names are case sensitive.";
    const NOTE_END: &str = "enable_ident_normalization configuration";
    let message = match (message.find(NOTE), message.find(NOTE_END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{}", &message[..start], &message[end + NOTE_END.len()..])
        }
        _ => message,
    };
    format!("{message}; {hint}")
}

/// `name` as a quoted SQL identifier, which resolves to exactly `name`.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How to write `name` in SQL so that it resolves to exactly `name`: bare when it is a plain
/// lower-case identifier, quoted otherwise.
pub fn to_sql(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        quoted(name)
    }
}

/// `"; did you mean `x`?"` for the column among `columns` that the user most likely meant by
/// the normalized name `name`, spelled so that it resolves; empty when no column is close. A
/// column that differs only in case gets a note on folding, since that is the usual cause.
pub fn suggest_column<'a>(name: &str, columns: impl IntoIterator<Item = &'a str>) -> String {
    let columns: Vec<&str> = columns.into_iter().collect();
    if let Some(c) = columns.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        return format!(
            "; did you mean `{}`? (unquoted names fold to lower case; quoted names keep their case)",
            to_sql(c)
        );
    }
    super::closest(name, columns)
        .map(|c| format!("; did you mean `{}`?", to_sql(c)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_fold_like_datafusion() {
        assert_eq!(one("CarrierID").as_deref(), Some("carrierid"));
        assert_eq!(one("\"CarrierID\"").as_deref(), Some("CarrierID"));
        assert_eq!(one("\"a\"\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(one("mode").as_deref(), Some("mode"));
        assert_eq!(one("a b"), None);
        assert_eq!(one("'a'"), None);
        assert_eq!(one("a + 1"), None);
        assert_eq!(
            list("a, \"B\" ,C").unwrap(),
            vec!["a".to_string(), "B".into(), "c".into()]
        );
        assert_eq!(list("a,"), None);
        let c = calls("Region, day(Ship_Date), BUCKET(16, \"CustomerID\")").unwrap();
        assert_eq!(c[0].function, None);
        assert_eq!(c[0].column, "region");
        assert_eq!(c[1].function.as_deref(), Some("day"));
        assert_eq!(c[1].column, "ship_date");
        assert_eq!(c[2].function.as_deref(), Some("bucket"));
        assert_eq!(c[2].argument, Some(16));
        assert_eq!(c[2].column, "CustomerID");
        assert_eq!(calls("day(a"), None);
        assert_eq!(calls("bucket(16 a)"), None);
        assert_eq!(calls("bucket(-1, a)"), None);
        assert_eq!(calls("\"day\"(a)"), None);
        assert_eq!(
            path("Silver.customers.\"CustomerID\"").unwrap(),
            vec![
                "silver".to_string(),
                "customers".into(),
                "CustomerID".into()
            ]
        );
    }

    #[test]
    fn suggestions_spell_the_column_so_it_resolves() {
        let cols = ["CarrierID", "carrier_code", "weight_kg"];
        let s = suggest_column("carrierid", cols);
        assert!(s.contains("`\"CarrierID\"`"), "{s}");
        let s = suggest_column("Weight_Kg", cols);
        assert!(s.contains("`weight_kg`"), "{s}");
        assert!(suggest_column("carrier_cod", cols).contains("`carrier_code`"));
        assert_eq!(suggest_column("zzzzzzzzzzzz", cols), "");
        assert_eq!(to_sql("Mode"), "\"Mode\"");
        assert_eq!(to_sql("1x"), "\"1x\"");
    }
}
