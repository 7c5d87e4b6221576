//! The workspace README's example is the crate README's, which runs as a doc test
//! (`ReadmeDoctests` in `src/lib.rs`): the front page shows code that is tested.

/// The first ```rust block of a markdown file.
fn first_rust_block(markdown: &str) -> String {
    let start = markdown.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let end = start + markdown[start..].find("```").expect("the block ends");
    markdown[start..end].to_string()
}

#[test]
fn the_workspace_readme_shows_the_tested_example() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace_readme = crate_dir.join("../../README.md");
    let Ok(front_page) = std::fs::read_to_string(&workspace_readme) else {
        // A packaged crate has no workspace around it; its README is the doc test.
        eprintln!(
            "skipping: no workspace README at {} (a packaged crate)",
            workspace_readme.display()
        );
        return;
    };
    let tested = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    assert_eq!(
        first_rust_block(&front_page),
        first_rust_block(&tested),
        "README.md's example differs from crates/directfile/README.md's (the tested one)"
    );
}
