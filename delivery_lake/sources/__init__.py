"""Foreign exports onto the contract, by declaration: one mapping file per source (`sources/<name>.yaml`).

- mapping: the mapping language, loaded into dataclasses and validated against the contract (and,
  given the folder of foreign files, against their headers);
- render: each mapped feed streamed by DuckDB into a contract-shaped CSV in the inbox, which the
  ordinary landing then types, quarantines and reconciles;
- profile: the checklist for a new source (`delivery-lake source check`) and a first draft
  mapping (`delivery-lake source init`);
- parsers: the CLI's argument parsers (the modules above are imported when a command runs).
"""
