# A minimal stand-in for the parts of nixpkgs' `lib` that ../options.nix
# uses, so the options (their defaults and types) can be evaluated with plain
# `nix-instantiate` where no nixpkgs is available (this project's CI).
#
# It is NOT the module system: no priorities, no merging of several
# definitions, no mkIf. It evaluates ONE definition per option (a test
# input) against the declared type and default, which is what
# ./eval.nix needs. The real module system is exercised by the VM test in
# ../../flake.nix (checks.<system>.vm).
#
# Types are records { name, check, merge } where merge turns a checked value
# into the final config value (submodules fill in their defaults).
let
  inherit (builtins) all isAttrs isBool isFunction isInt isList isString
    match elem attrNames filter concatStringsSep toJSON mapAttrs;

  mkType = name: check: {
    _type = "mock-option-type";
    inherit name check;
    merge = loc: v: v;
  };

  # Check a value against a type and return the merged value, or throw with
  # the option path (like the module system does).
  mergeValue = loc: type: v:
    if type.check v then type.merge loc v
    else throw "offline eval: the option `${loc}' has value ${toJSON v}, which is not of type ${type.name}.";

  # Evaluate a set of option declarations against one attrset of
  # definitions. Unknown definitions are an error, as in the module system.
  evalOptionSet = loc: decls: defs:
    let
      unknown = filter (n: !(decls ? ${n})) (attrNames defs);
      sub = n: if loc == "" then n else "${loc}.${n}";
    in
    if !(isAttrs defs) then throw "offline eval: `${loc}' must be an attribute set"
    else if unknown != [ ] then
      throw "offline eval: the option(s) ${concatStringsSep ", " (map sub unknown)} do not exist."
    else
      mapAttrs
        (n: decl:
          if decl._type or null == "mock-option" then
            (if defs ? ${n} then mergeValue (sub n) decl.type defs.${n}
             else if decl ? default then mergeValue (sub n) decl.type decl.default
             else throw "offline eval: the option `${sub n}' is used but not defined.")
          else evalOptionSet (sub n) decl (defs.${n} or { }))
        decls;

  submoduleOptions = m:
    let m' = if isFunction m then m { lib = self; name = "<name>"; config = { }; } else m;
    in m'.options;

  types = rec {
    bool = mkType "boolean" isBool;
    str = mkType "string" isString;
    int = mkType "signed integer" isInt;
    package = mkType "package" (v: isAttrs v || isString v);
    path = mkType "path" (v: isString v && builtins.substring 0 1 v == "/");
    ints = {
      positive = mkType "positive integer" (v: isInt v && v > 0);
      unsigned = mkType "unsigned integer" (v: isInt v && v >= 0);
      between = lo: hi: mkType "integer between ${toString lo} and ${toString hi}"
        (v: isInt v && v >= lo && v <= hi);
    };
    strMatching = re: mkType "string matching the pattern ${re}"
      (v: isString v && match re v != null);
    enum = vs: mkType "one of ${concatStringsSep ", " (map toJSON vs)}" (v: elem v vs);
    nullOr = t: (mkType "null or ${t.name}" (v: v == null || t.check v)) // {
      merge = loc: v: if v == null then null else t.merge loc v;
    };
    listOf = t: (mkType "list of ${t.name}" (v: isList v && all t.check v)) // {
      merge = loc: v: map (x: mergeValue "${loc}.*" t x) v;
    };
    submodule = m: (mkType "submodule" isAttrs) // {
      merge = loc: v: evalOptionSet loc (submoduleOptions m) v;
    };
  };

  self = {
    inherit types;
    mkOption = attrs: attrs // { _type = "mock-option"; };
    mkEnableOption = what: {
      _type = "mock-option";
      type = types.bool;
      default = false;
      description = "Whether to enable ${what}.";
    };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    inherit evalOptionSet;
  };
in
self
