# The NixOS options that ../default.nix reads or defines, declared with the
# types NixOS gives them (nixos/modules/...), so that ./eval.nix can
# evaluate the module with the real module system and nothing else of
# NixOS. A definition the real option would refuse (wrong type, two
# conflicting values) is refused here too; that is the point. Options are
# declared only as far as the module and the tests use them, and their
# implementation (building units, /etc, users) is left out: the checks
# assert on the option values.
#
# Also reproduced: NixOS's own assertions about the users and groups the
# module creates (nixos/modules/config/users-groups.nix), because a module
# that gets them wrong fails to build on a real host.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # systemd.services.<name>.serviceConfig / unitConfig values
  # (nixos/lib/systemd-lib.nix, unitOption): a scalar or a list of scalars.
  # Lists from several definitions are concatenated; scalars must agree
  # (two different values are an error unless one has a higher priority,
  # e.g. lib.mkForce).
  unitOption = types.mkOptionType {
    name = "systemd option";
    description = "systemd option (bool, int, string, path or a list of them)";
    check = v:
      let atom = x: builtins.isBool x || builtins.isInt x || builtins.isString x || builtins.isPath x;
      in atom v || (builtins.isList v && builtins.all atom v);
    merge = loc: defs:
      if builtins.any (d: builtins.isList d.value) defs
      then builtins.concatMap (d: lib.toList d.value) defs
      else lib.mergeEqualOption loc defs;
  };

  serviceModule = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      requiredBy = mkOption { type = types.listOf types.str; default = [ ]; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      requires = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      before = mkOption { type = types.listOf types.str; default = [ ]; };
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
      };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      reloadIfChanged = mkOption { type = types.bool; default = false; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      startAt = mkOption { type = types.either types.str (types.listOf types.str); default = [ ]; };
    };
  };

  # systemd.timers.<name> (nixos/lib/systemd-unit-options.nix).
  timerModule = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  etcModule = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      target = mkOption { type = types.str; default = name; };
      text = mkOption { type = types.nullOr types.lines; default = null; };
      source = mkOption { type = types.path; };
      mode = mkOption { type = types.str; default = "symlink"; };
      user = mkOption { type = types.str; default = "+0"; };
      group = mkOption { type = types.str; default = "+0"; };
    };
  };

  userModule = { name, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; };
      description = mkOption { type = types.str; default = ""; };
      uid = mkOption { type = types.nullOr types.int; default = null; };
      group = mkOption { type = types.str; default = ""; };
      extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
      home = mkOption { type = types.path; default = "/var/empty"; };
      createHome = mkOption { type = types.bool; default = false; };
      isSystemUser = mkOption { type = types.bool; default = false; };
      isNormalUser = mkOption { type = types.bool; default = false; };
    };
  };

  groupModule = { name, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; };
      gid = mkOption { type = types.nullOr types.int; default = null; };
      members = mkOption { type = types.listOf types.str; default = [ ]; };
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
      internal = true;
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
      internal = true;
    };

    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.proxy.envVars = mkOption {
      type = types.attrs;
      default = { };
      internal = true;
    };

    nix.enable = mkOption { type = types.bool; default = true; };
    nix.package = mkOption { type = types.package; default = pkgs.nix; };
    nix.envVars = mkOption { type = types.attrs; default = { }; internal = true; };

    programs.ssh.package = mkOption { type = types.package; default = pkgs.openssh; };

    system.build = mkOption {
      type = types.submoduleWith {
        modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
      };
      default = { };
    };

    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    environment.etc = mkOption { type = types.attrsOf (types.submodule etcModule); default = { }; };

    users.users = mkOption { type = types.attrsOf (types.submodule userModule); default = { }; };
    users.groups = mkOption { type = types.attrsOf (types.submodule groupModule); default = { }; };

    systemd.services = mkOption { type = types.attrsOf (types.submodule serviceModule); default = { }; };
    systemd.timers = mkOption { type = types.attrsOf (types.submodule timerModule); default = { }; };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
  };

  config = {
    system.build.nixos-rebuild = pkgs.nixos-rebuild;

    # As NixOS checks every user (users-groups.nix).
    assertions = lib.concatLists (lib.mapAttrsToList
      (name: u: [
        {
          assertion = u.isSystemUser != u.isNormalUser;
          message = "Exactly one of users.users.${name}.isSystemUser and users.users.${name}.isNormalUser must be set.";
        }
        {
          assertion = u.group != "";
          message = "users.users.${name}.group is unset.";
        }
        {
          assertion = u.group == "" || config.users.groups ? ${u.group};
          message = "users.users.${name}.group = \"${u.group}\", but that group is not in users.groups.";
        }
      ])
      config.users.users);
  };
}
