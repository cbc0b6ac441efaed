fn main() -> std::process::ExitCode {
    mcp_discovery::cli::main()
}
