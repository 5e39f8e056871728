//! Partials and layouts written into the templates that include them, once
//! at load.
//!
//! handlebars-rust copies the whole render context for every partial it
//! includes (`expand_partial` gives the partial a context of its own), and an
//! email includes three (its layout, the footer, the signature): a third of
//! the time a worker spends rendering. A partial included with no parameter,
//! no hash and no indentation renders exactly as its elements written in its
//! place, so those inclusions are replaced by the elements. Whatever could
//! render differently is left to handlebars: a template with inline partials
//! (`{{#*inline}}`) or decorators, a partial inside a block with block params
//! (`as |x|`), a partial that climbs out of its context (`..`), an indented
//! partial, a layout whose `{{> @partial-block}}` is not at its top level.
//!
//! Errors come from the templates as written: when a rewritten template fails,
//! [`super::Renderer`] renders the original to report which file and line.

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{Handlebars, Path};
use std::collections::HashSet;

const PARTIAL_BLOCK: &str = "@partial-block";

/// Partials nest at most this deep in a rewritten template.
const MAX_DEPTH: usize = 8;

/// A copy of `hb` whose templates named in `templates` have their partials
/// written in. `safe` names the partials whose source may be inlined.
pub(super) fn inlined<'a>(
    hb: &Handlebars<'static>,
    templates: impl IntoIterator<Item = &'a str>,
    safe: &HashSet<String>,
) -> Handlebars<'static> {
    let mut quick = hb.clone();
    for name in templates {
        let Some(template) = hb.get_template(name) else { continue };
        let rewrite = Rewrite { hb, safe };
        if let Some(inlined) = rewrite.template(template, Where::default()) {
            quick.register_template(name, inlined);
        }
    }
    quick
}

/// Whether a partial's source can be written into another template: it
/// neither defines inline partials nor reads outside its own context.
pub(super) fn can_inline(source: &str) -> bool {
    !source.contains("..") && !source.contains("{{#*") && !source.contains("{{~#*")
}

struct Rewrite<'a> {
    hb: &'a Handlebars<'static>,
    safe: &'a HashSet<String>,
}

/// Where the elements being rewritten are.
#[derive(Clone, Copy, Default)]
struct Where<'a> {
    depth: usize,
    /// Inside a block that declares block params.
    block_params: bool,
    /// Inside a layout, at its top level: what `{{> @partial-block}}` becomes.
    partial_block: Option<&'a Template>,
}

impl Rewrite<'_> {
    /// `template` with its partials written in; `None` when anything in it
    /// could render differently that way.
    fn template(&self, template: &Template, at: Where<'_>) -> Option<Template> {
        if at.depth > MAX_DEPTH {
            return None;
        }
        let mut out = template.clone();
        out.elements.clear();
        out.mapping.clear();
        for (element, mapping) in template.elements.iter().zip(&template.mapping) {
            match element {
                TemplateElement::PartialExpression(d) => {
                    let name = self.plain_name(&d.name, &d.params, &d.hash, d.indent.as_deref(), at)?;
                    let inner = if name == PARTIAL_BLOCK {
                        at.partial_block?.clone()
                    } else {
                        self.template(self.partial(name)?, Where { depth: at.depth + 1, ..Where::default() })?
                    };
                    out.elements.extend(inner.elements);
                    out.mapping.extend(inner.mapping);
                }
                TemplateElement::PartialBlock(d) => {
                    let name = self.plain_name(&d.name, &d.params, &d.hash, d.indent.as_deref(), at)?;
                    let layout = self.partial(name)?;
                    let body =
                        self.template(d.template.as_ref()?, Where { depth: at.depth + 1, partial_block: None, ..at })?;
                    // A layout that never writes its block would skip the body's errors.
                    if !writes_partial_block(layout) {
                        return None;
                    }
                    let inner = self.template(
                        layout,
                        Where { depth: at.depth + 1, block_params: false, partial_block: Some(&body) },
                    )?;
                    out.elements.extend(inner.elements);
                    out.mapping.extend(inner.mapping);
                }
                TemplateElement::HelperBlock(h) => {
                    let mut h = h.clone();
                    let inside = Where {
                        depth: at.depth,
                        block_params: at.block_params || h.block_param.is_some(),
                        // Within a block, the body would be evaluated in the block's context.
                        partial_block: None,
                    };
                    if let Some(t) = &h.template {
                        h.template = Some(self.template(t, inside)?);
                    }
                    if let Some(t) = &h.inverse {
                        h.inverse = Some(self.template(t, inside)?);
                    }
                    out.elements.push(TemplateElement::HelperBlock(h));
                    out.mapping.push(mapping.clone());
                }
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => return None,
                other => {
                    out.elements.push(other.clone());
                    out.mapping.push(mapping.clone());
                }
            }
        }
        Some(out)
    }

    /// The name of a partial included plainly (no parameter, no hash, no
    /// indentation, not under block params), or `None`.
    fn plain_name<'p>(
        &self,
        name: &'p Parameter,
        params: &[Parameter],
        hash: &std::collections::HashMap<String, Parameter>,
        indent: Option<&str>,
        at: Where<'_>,
    ) -> Option<&'p str> {
        if !params.is_empty() || !hash.is_empty() || !indent.unwrap_or_default().is_empty() || at.block_params {
            return None;
        }
        match name {
            Parameter::Name(n) => Some(n),
            Parameter::Path(Path::Relative((_, raw))) => Some(raw),
            _ => None,
        }
    }

    fn partial(&self, name: &str) -> Option<&Template> {
        self.safe.contains(name).then(|| self.hb.get_template(name)).flatten()
    }
}

/// Whether `layout` includes its block at its top level.
fn writes_partial_block(layout: &Template) -> bool {
    layout.elements.iter().any(|e| match e {
        TemplateElement::PartialExpression(d) => match &d.name {
            Parameter::Name(n) => n == PARTIAL_BLOCK,
            Parameter::Path(Path::Relative((_, raw))) => raw == PARTIAL_BLOCK,
            _ => false,
        },
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Renders `template` with both registries: as written, and rewritten.
    fn both(partials: &[(&str, &str)], template: &str, data: serde_json::Value) -> (String, String, bool) {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        let mut safe = HashSet::new();
        for (name, source) in partials {
            hb.register_partial(name, source).unwrap();
            if can_inline(source) {
                safe.insert(name.to_string());
            }
        }
        hb.register_template_string("t", template).unwrap();
        let quick = inlined(&hb, ["t"], &safe);
        let rewritten = quick.get_template("t") != hb.get_template("t");
        let exact = hb.render("t", &data).unwrap_or_else(|e| format!("error: {e}"));
        let fast = quick.render("t", &data).unwrap_or_else(|e| format!("error: {e}"));
        (exact, fast, rewritten)
    }

    #[test]
    fn plain_partials_and_layouts_render_the_same_written_in() {
        let partials = [
            ("footer", "<hr>\n<p>{{shop}} · {{#if vip}}VIP{{/if}}</p>\n"),
            ("layout", "<html>\n{{> @partial-block}}\n{{> footer}}\n</html>\n"),
            ("row", "{{name}} ({{@index}}): {{price}}"),
        ];
        let data =
            json!({"shop": "Shop", "vip": true, "items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}]});
        for template in [
            "{{#> layout}}\n<h1>Hi {{shop}}</h1>\n{{#each items}}<li>{{> row}}</li>\n{{/each}}{{/layout}}\n",
            "Start\n{{> footer}}\nEnd {{shop}}",
            "{{#each items}}\n{{> row}}\n{{/each}}",
            "{{~> footer~}} x",
        ] {
            let (exact, fast, rewritten) = both(&partials, template, data.clone());
            assert!(rewritten, "{template}");
            assert_eq!(exact, fast, "{template}");
        }
    }

    #[test]
    fn what_could_render_differently_is_left_as_written() {
        let partials = [
            ("up", "{{../shop}}"),
            ("row", "{{item.name}}"),
            ("plain", "{{name}}\nsecond line\n"),
            ("inline", "{{#*inline \"x\"}}X{{/inline}}{{> x}}"),
            ("nested", "<div>{{#if shop}}{{> @partial-block}}{{/if}}</div>"),
            ("ignores", "no block here"),
        ];
        let data = json!({"shop": "Shop", "name": "n", "items": [{"name": "a"}]});
        for template in [
            "{{#each items}}{{> up}}{{/each}}",
            "{{#each items as |item|}}{{> row}}{{/each}}",
            "list:\n  {{> plain}}\nend",
            "{{> plain name=shop}}",
            "{{> inline}}",
            "{{#> nested}}{{name}}{{/nested}}",
            "{{#> ignores}}{{missing}}{{/ignores}}",
            "{{#*inline \"plain\"}}mine{{/inline}}{{> plain}}",
        ] {
            let (exact, fast, rewritten) = both(&partials, template, data.clone());
            assert!(!rewritten, "{template} was rewritten");
            assert_eq!(exact, fast, "{template}");
        }
    }
}
