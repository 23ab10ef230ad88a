// Subcommand registry for the `ssm` binary. Each tools/cmd_<name>.cpp defines one command:
//
//   static ssm::tools::Command cmd{"tokenize", "Text to token ids", [](CLI::App& app) {
//     auto opts = std::make_shared<Opts>();
//     app.add_option("-m,--model", opts->model, "model directory");
//     app.footer("Examples:\n  ssm tokenize -m DIR \"Hello\"\n");
//     return [opts] { /* run; return exit code */ return 0; };
//   }};
//
// main.cpp creates the CLI11 subcommand, calls setup, and runs the returned action if the
// subcommand was chosen. Errors thrown as ssm::Error are printed as "error: ..." with exit code 1.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace ssm::tools {

using Action = std::function<int()>;
using Setup = std::function<Action(CLI::App&)>;

struct Command {
  Command(std::string name, std::string help, Setup setup);
};

struct CommandInfo {
  std::string name, help;
  Setup setup;
};
std::vector<CommandInfo>& registry();

}  // namespace ssm::tools
