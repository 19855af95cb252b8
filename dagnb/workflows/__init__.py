"""The workflows layer: YAML workflow files (`loader`) and pipeline templates. Imports
`runtime` and below."""
